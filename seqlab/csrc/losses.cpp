// seqlab's multiclass losses on the CPU, float32: one pass per row gives the loss and the
// gradient with respect to the logits, and backward only scales that gradient.
//
// The same losses are written with torch operations in seqlab/losses.py; that code runs
// wherever this file does not (other devices, float64, no compiler), and the tests check that
// both agree. The formulas are documented there; this file follows them.
//
// Every loss but the softmax form of soft truncation is a function of log p_t and
// log(1 - p_t), taken here from the margin z = logsumexp_{j != t} x_j - x_t:
//   log p_t = -softplus(z),  log(1 - p_t) = -softplus(-z),
// which keeps both exact when either probability is tiny. With c1, c2 the partial derivatives
// of the loss with respect to log p_t and log(1 - p_t),
//   dL/dz = c2 p_t - c1 (1 - p_t),  dL/dx_t = -dL/dz,  dL/dx_j = dL/dz q_j  (j != t),
// where q is the softmax over the classes other than t.

#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <ATen/cpu/vec/functional.h>
#include <ATen/cpu/vec/vec.h>

#include <cmath>
#include <limits>
#include <vector>

namespace {

using at::Tensor;
using torch::autograd::AutogradContext;
using torch::autograd::variable_list;
using Vec = at::vec::Vectorized<float>;

constexpr double kInf = std::numeric_limits<double>::infinity();

// Must match _KINDS in seqlab/losses.py.
enum Kind : int64_t { kCE = 0, kFocal = 1, kSoftMargin = 2, kHard = 3, kDice = 4, kSoftSoftmax = 5 };
// Must match _MODES in seqlab/losses.py: "mean", "sum", "none", and sum / num_items_in_batch.
enum Mode : int64_t { kMean = 0, kSum = 1, kNone = 2, kDivide = 3 };

struct Spec {
  int64_t kind;
  double a;  // gamma (focal), K (soft truncation), log m (hard truncation), alpha (dice)
  double b;  // smooth (dice)
};

inline double sigmoid(double z) { return 1.0 / (1.0 + std::exp(-z)); }

// The loss of one item and its partial derivatives c1 = dL/dlog p_t, c2 = dL/dlog(1 - p_t).
inline void item_loss(const Spec& s, double z, double logp, double log1m, double& loss,
                      double& c1, double& c2) {
  switch (s.kind) {
    case kFocal:
      if (s.a != 0) {
        const double mod = std::exp(s.a * log1m);
        loss = -mod * logp;
        c1 = -mod;
        c2 = s.a * loss;
        return;
      }
      break;  // gamma = 0: cross-entropy
    case kSoftMargin: {
      const double f = s.a == 0 ? 0.5 : sigmoid(s.a * z);
      const double a = s.a * f * (1.0 - f) * logp;
      loss = -f * logp;
      c1 = a - f;
      c2 = -a;
      return;
    }
    case kHard: {
      const double g = logp < s.a ? -1.0 : 0.0;
      loss = g * logp;
      c1 = g;
      c2 = 0.0;
      return;
    }
    case kDice: {
      // loss = (1 - q) / (q + 1 + smooth), q = (1 - p_t)^alpha p_t
      const double q = std::exp(s.a == 0 ? logp : logp + s.a * log1m);
      const double den = q + 1.0 + s.b;
      const double g = -(2.0 + s.b) * q / den / den;
      loss = (1.0 - q) / den;
      c1 = g;
      c2 = s.a * g;
      return;
    }
    default:
      break;
  }
  loss = -logp;  // cross-entropy
  c1 = -1.0;
  c2 = 0.0;
}

// Row helpers: ATen's vectorised loops for rows of at least one vector, plain loops below that
// (a partial vector is copied through a buffer, which costs more than it saves).
float row_max(const float* x, int64_t n) {
  if (n >= Vec::size())
    return at::vec::reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, x, n);
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t j = 0; j < n; ++j) m = std::isnan(x[j]) || x[j] > m ? x[j] : m;
  return m;
}

float row_sum(const float* x, int64_t n) {
  if (n >= Vec::size())
    return at::vec::reduce_all<float>([](Vec& a, Vec& b) { return a + b; }, x, n);
  float s = 0.f;
  for (int64_t j = 0; j < n; ++j) s += x[j];
  return s;
}

// out_j = fv(x_j), vector by vector (the last one partial).
template <typename FV>
void row_map(float* out, const float* x, int64_t n, const FV& fv) {
  if (n >= Vec::size()) {
    at::vec::map(fv, out, x, n);
    return;
  }
  fv(Vec::loadu(x, n)).store(out, n);  // one exponential of a vector beats n of a scalar
}

// out_j = exp(x_j - shift) for j != t, out_t = 0; returns their sum. exp is ATen's exp_u20,
// the one its softmax uses.
float exp_sum_others(float* out, const float* x, int64_t C, int64_t t, float shift) {
  const Vec vs(shift);
  row_map(out, x, C, [vs](Vec v) { return (v - vs).exp_u20(); });
  out[t] = 0.f;  // exp(x_t - shift) may overflow: it is never summed
  return row_sum(out, C);
}

// The greatest logit (NaN if any is NaN) and the least one above -inf (+inf if none).
void min_max(const float* x, int64_t n, float& low, float& high) {
  const float inf = std::numeric_limits<float>::infinity();
  int64_t j = 0;
  low = inf;
  high = -inf;
  if (n >= Vec::size()) {
    const Vec vinf(inf);
    Vec lo(inf), hi(-inf);
    for (; j + Vec::size() <= n; j += Vec::size()) {
      const Vec v = Vec::loadu(x + j);
      hi = at::vec::maximum(hi, v);
      lo = at::vec::minimum(lo, Vec::blendv(v, vinf, v == -vinf));
    }
    high = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return at::vec::maximum(a, b); }, hi);
    low = at::vec::vec_reduce_all<float>([](Vec& a, Vec& b) { return at::vec::minimum(a, b); }, lo);
  }
  for (; j < n; ++j) {
    high = std::isnan(x[j]) || x[j] > high ? x[j] : high;
    if (x[j] > -inf && x[j] < low) low = x[j];
  }
}

void row_scale(float* g, float f, int64_t n) {
  if (n >= Vec::size()) {
    at::vec::map([f](Vec v) { return v * Vec(f); }, g, g, n);
    return;
  }
  for (int64_t j = 0; j < n; ++j) g[j] *= f;
}

// A loss of the margin, for one row: returns the item's loss times `scale`, and writes the
// gradient of that into g (when g is not null). `e` is scratch space of C floats.
double margin_row(const Spec& s, const float* x, int64_t C, int64_t t, double scale, float* g,
                  float* e) {
  const float xt = x[t];
  const float m = std::max(row_max(x, t), row_max(x + t + 1, C - t - 1));
  double z, sum = 0;
  if (g) e = g;
  if (std::isinf(m) && m < 0) {
    z = -kInf;  // no other class: p_t = 1
    if (g) std::fill(g, g + C, 0.f);
  } else {
    sum = exp_sum_others(e, x, C, t, m);
    z = (static_cast<double>(m) - xt) + std::log(sum);
  }
  // log p_t = -softplus(z), log(1 - p_t) = -softplus(-z), from one exponential
  const double u = std::exp(-std::fabs(z)), l = std::log1p(u);
  const double logp = -(std::max(z, 0.0) + l), log1m = -(std::max(-z, 0.0) + l);
  const double p = z > 0 ? u / (1.0 + u) : 1.0 / (1.0 + u);  // p_t
  const double q = z > 0 ? 1.0 / (1.0 + u) : u / (1.0 + u);  // 1 - p_t
  double loss, c1, c2;
  item_loss(s, z, logp, log1m, loss, c1, c2);
  if (g) {
    const double dz = (c2 * p - c1 * q) * scale;
    if (sum > 0) row_scale(g, static_cast<float>(dz / sum), C);
    g[t] = static_cast<float>(-dz);
  }
  return loss * scale;
}

// The softmax form of soft truncation, -f log p_t with f = softmax(-K x)_t over the classes
// whose logit is not -inf, for one row. `r` is scratch space of C floats.
double softmax_form_row(double k, const float* x, int64_t C, int64_t t, double scale, float* g,
                        float* r, float* e) {
  if (g) e = g;
  float low, big;
  min_max(x, C, low, big);
  const double e_t = std::exp(x[t] - big);
  const double others = exp_sum_others(e, x, C, t, big), total = others + e_t;
  // log p_t stays exact as p_t -> 1: log total = log1p(others + e_t - 1), and e_t = 1 there
  const double logp = (static_cast<double>(x[t]) - big) - std::log1p(others + (e_t - 1.0));

  // r = exp(-K x - max(-K x)) = exp(K (low - x)), low the least logit above -inf; 0 where
  // x = -inf; at K = 0, 1 wherever x > -inf
  const float inf = std::numeric_limits<float>::infinity();
  const float kf = static_cast<float>(k);
  const Vec vinf(inf), vzero(0.f), vone(1.f), vlow(low), vk(kf);
  auto fv = [=](Vec v) {
    return Vec::blendv(k == 0 ? vone : ((vlow - v) * vk).exp_u20(), vzero, v == -vinf);
  };
  row_map(r, x, C, fv);
  const double r_t = r[t];
  r[t] = 0.f;
  const double r_others = row_sum(r, C);
  const double r_total = r_others + r_t;
  const double f = r_t / r_total;
  if (g) {
    // d/dx_j = c p_j - ck r_j (j != t), c (p_t - 1) + ck (1 - r_t) at t, with r normalised
    const double c = scale * f, ck = scale * k * f * logp;
    const float a = static_cast<float>(c / total), b = static_cast<float>(ck / r_total);
    if (C >= Vec::size())
      at::vec::map2([a, b](Vec ev, Vec rv) { return ev * Vec(a) - rv * Vec(b); }, g, e, r, C);
    else
      for (int64_t j = 0; j < C; ++j) g[j] = e[j] * a - r[j] * b;
    g[t] = static_cast<float>(-c * (others / total) + ck * (r_others / r_total));
  }
  return -f * logp * scale;
}

// Checks, then the per-item losses (times their scale) and, when need_grad, the gradient.
std::tuple<Tensor, Tensor> compute(const Tensor& logits, const Tensor& target, const Tensor& weight,
                                   const Spec& spec, int64_t ignore_index, int64_t mode,
                                   double denominator, bool need_grad) {
  TORCH_CHECK(logits.dim() == 2 && logits.scalar_type() == at::kFloat,
              "expected float32 logits (N, C)");
  TORCH_CHECK(target.dim() == 1 && target.size(0) == logits.size(0) &&
                  target.scalar_type() == at::kLong,
              "expected int64 target (N,)");
  const Tensor x = logits.contiguous(), t = target.contiguous();
  const int64_t N = x.size(0), C = x.size(1);
  const bool weighted = weight.numel() > 0;
  const Tensor w = weighted ? weight.contiguous() : weight;
  TORCH_CHECK(!weighted || (w.numel() == C && w.scalar_type() == at::kFloat),
              "expected float32 weight (C,)");

  const int64_t* tp = t.data_ptr<int64_t>();
  const float* wp = weighted ? w.data_ptr<float>() : nullptr;
  double valid = 0;
  for (int64_t i = 0; i < N; ++i) {
    const int64_t ti = tp[i];
    if (ti == ignore_index) continue;
    TORCH_CHECK_VALUE(ti >= 0 && ti < C, "target holds ", ti, ", expected a class index in [0, ",
                      C, ") or ignore_index=", ignore_index);
    valid += weighted ? wp[ti] : 1.0;
  }
  double factor = 1.0;
  if (mode == kMean) factor = valid > 0 ? 1.0 / valid : 0.0;
  if (mode == kDivide) factor = denominator > 0 ? 1.0 / denominator : 0.0;  // 0: all ignored

  Tensor items = at::empty({N}, x.options());
  Tensor grad = need_grad ? at::empty_like(x) : Tensor();
  const float* xp = x.data_ptr<float>();
  float* ip = items.data_ptr<float>();
  float* gp = need_grad ? grad.data_ptr<float>() : nullptr;
  // rows of a few thousand elements in all run on the calling thread
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(C, 1));
  at::parallel_for(0, N, grain, [&](int64_t begin, int64_t end) {
    // scratch rows: the exponentials when no gradient is asked for, and r of the softmax form
    std::vector<float> scratch(2 * C);
    for (int64_t i = begin; i < end; ++i) {
      float* g = gp ? gp + i * C : nullptr;
      const int64_t ti = tp[i];
      if (ti == ignore_index) {
        ip[i] = 0.f;
        if (g) std::fill(g, g + C, 0.f);
        continue;
      }
      const double scale = (weighted ? wp[ti] : 1.0) * factor;
      ip[i] = static_cast<float>(
          spec.kind == kSoftSoftmax
              ? softmax_form_row(spec.a, xp + i * C, C, ti, scale, g, scratch.data(),
                                 scratch.data() + C)
              : margin_row(spec, xp + i * C, C, ti, scale, g, scratch.data()));
    }
  });
  return {items, grad};
}

struct FusedLoss : public torch::autograd::Function<FusedLoss> {
  static Tensor forward(AutogradContext* ctx, const Tensor& logits, const Tensor& target,
                        const Tensor& weight, int64_t kind, double a, double b,
                        int64_t ignore_index, int64_t mode, double denominator) {
    auto [items, grad] =
        compute(logits, target, weight, Spec{kind, a, b}, ignore_index, mode, denominator, true);
    ctx->save_for_backward({grad});
    ctx->saved_data["per_item"] = mode == kNone;
    return mode == kNone ? items : items.sum();
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const Tensor grad = ctx->get_saved_variables()[0];
    const Tensor& go = grad_outputs[0];
    const Tensor dx = ctx->saved_data["per_item"].toBool() ? grad * go.unsqueeze(-1) : grad * go;
    return {dx, Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor(), Tensor()};
  }
};

// logits (N, C) float32, target (N,) int64, weight (C,) float32 or empty. mode: see Mode;
// denominator is used by kDivide only. Returns the per-item losses (kNone) or their sum.
Tensor multiclass_loss(const Tensor& logits, const Tensor& target, const Tensor& weight,
                       int64_t kind, double a, double b, int64_t ignore_index, int64_t mode,
                       double denominator) {
  if (logits.requires_grad() && at::GradMode::is_enabled())
    return FusedLoss::apply(logits, target, weight, kind, a, b, ignore_index, mode, denominator);
  auto [items, grad] = compute(logits, target, weight, Spec{kind, a, b}, ignore_index, mode,
                               denominator, false);
  return mode == kNone ? items : items.sum();
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("multiclass_loss", &multiclass_loss, "seqlab's fused multiclass losses (CPU, float32)");
}
