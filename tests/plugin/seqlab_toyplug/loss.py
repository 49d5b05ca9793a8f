"""A loss: focal loss with another default, under its own name."""

from seqlab.losses import _Loss, focal_loss, register_loss


def squared_focal(logits, target, *, gamma: float = 2.0, weight=None, ignore_index=-100,
                  reduction="mean", num_items_in_batch=None, binary=False):
    """Focal loss, gamma 2 unless told otherwise."""
    return focal_loss(logits, target, gamma=gamma, weight=weight, ignore_index=ignore_index,
                      reduction=reduction, num_items_in_batch=num_items_in_batch, binary=binary)


@register_loss("squared_focal")
class SquaredFocal(_Loss):
    fn = staticmethod(squared_focal)
