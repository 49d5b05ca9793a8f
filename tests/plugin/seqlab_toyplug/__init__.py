"""A plug-in distribution outside seqlab: a head, a loss and an input format, one module each,
each declared in the ``seqlab.plugins`` entry-point group of the distribution
(``seqlab_toyplug-0.1.dist-info/entry_points.txt``). The tests put this directory on the path
as a package installed beside seqlab would be."""
