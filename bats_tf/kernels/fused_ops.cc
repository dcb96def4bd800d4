// Fused CPU kernels for the elementwise chains of a fused search cell (bats_tf/fused.py).
//
// TensorFlow runs each elementwise op as one pass over memory; around a binary grouped
// convolution of the search cell that is ~25 passes (forward and backward) over tensors
// larger than the cache. These kernels do each chain, and its gradient, in one pass:
//
//   BatsAffineSign:  z = pad(sign(gamma * tile(x, E) + beta))    (x: N,H,W,C; z: ...,E*C)
//   BatsPreluMix:    out = shuffle(sum_k w_k * prelu(y_k, a_k)) + sum_f tile(x_f, E) * v_f
//                    (y_k: N,H,W,D = E*C; x_f, the parameter-free terms: N,H,W,C)
//
// with sign(0) = 1 and the straight-through gradient 1{|v| <= 1} of Larq's ste_sign. Sums
// over pixels (parameter gradients) are split into a fixed number of shards and added in
// shard order, so results do not depend on the thread count.

#include <algorithm>
#include <cmath>
#include <vector>

#include "tensorflow/core/framework/op.h"
#include "tensorflow/core/framework/op_kernel.h"
#include "tensorflow/core/framework/shape_inference.h"
#include "tensorflow/core/platform/threadpool.h"

namespace bats {

using ::tensorflow::DEVICE_CPU;
using ::tensorflow::OpKernel;
using ::tensorflow::OpKernelConstruction;
using ::tensorflow::OpKernelContext;
using ::tensorflow::Status;
using ::tensorflow::Tensor;
using ::tensorflow::TensorShape;
using ::tensorflow::errors::InvalidArgument;
using ::tensorflow::shape_inference::DimensionHandle;
using ::tensorflow::shape_inference::InferenceContext;
using ::tensorflow::shape_inference::ShapeHandle;

constexpr int64_t kShards = 32;  // fixed: parameter gradients are summed in shard order

// Runs fn(begin, end) over [0, total) on the intra-op thread pool.
template <typename Fn>
void ParallelRows(OpKernelContext* ctx, int64_t total, int64_t cost, Fn fn) {
  auto* pool = ctx->device()->tensorflow_cpu_worker_threads()->workers;
  pool->ParallelFor(total, cost, [&](int64_t b, int64_t e) { fn(b, e); });
}

// Shard s of [0, rows): rows [begin, end).
inline void ShardRange(int64_t rows, int64_t shards, int64_t s, int64_t* b, int64_t* e) {
  *b = rows * s / shards;
  *e = rows * (s + 1) / shards;
}

// Sums partial[s][j] over shards into out[j], in shard order.
void SumShards(const std::vector<float>& partial, int64_t shards, int64_t n, float* out) {
  for (int64_t j = 0; j < n; ++j) out[j] = 0.0f;
  for (int64_t s = 0; s < shards; ++s) {
    const float* p = partial.data() + s * n;
    for (int64_t j = 0; j < n; ++j) out[j] += p[j];
  }
}

// One pixel, one edge of AffineSignGrad: dx += dv * gamma, dgamma += dv * x, dbeta += dv.
inline void AffineSignGradRow(int64_t c, bool binarize, const float* __restrict__ x,
                              const float* __restrict__ gamma, const float* __restrict__ beta,
                              const float* __restrict__ dz, float* __restrict__ dx,
                              float* __restrict__ dgamma, float* __restrict__ dbeta) {
  for (int64_t k = 0; k < c; ++k) {
    const float v = gamma[k] * x[k] + beta[k];
    const float dv = (!binarize || std::abs(v) <= 1.0f) ? dz[k] : 0.0f;
    dx[k] += dv * gamma[k];
    dgamma[k] += dv * x[k];
    dbeta[k] += dv;
  }
}

// One pixel, one term of PreluMixGrad.
inline void PreluMixGradRow(int64_t d, const float* __restrict__ grad,
                            const float* __restrict__ y, const float* __restrict__ alpha,
                            const float* __restrict__ weight, float* __restrict__ dy,
                            float* __restrict__ dalpha, float* __restrict__ dweight) {
  for (int64_t c = 0; c < d; ++c) {
    const float v = y[c], gw = grad[c] * weight[c];
    const bool pos = v > 0.0f;
    dy[c] = pos ? gw : gw * alpha[c];
    dalpha[c] += pos ? 0.0f : gw * v;
    dweight[c] += grad[c] * (pos ? v : v * alpha[c]);
  }
}

// acc = sum_k weight_k * prelu(y_k, alpha_k) at one pixel (offset `at` into each y_k).
inline void PreluMixRow(int64_t d, int k_count, const float* const* y, int64_t at,
                        const float* __restrict__ alpha, const float* __restrict__ weight,
                        float* __restrict__ acc) {
  for (int64_t i = 0; i < d; ++i) acc[i] = 0.0f;
  for (int k = 0; k < k_count; ++k) {
    const float* __restrict__ yk = y[k] + at;
    const float *__restrict__ ak = alpha + k * d, *__restrict__ wk = weight + k * d;
    for (int64_t i = 0; i < d; ++i) {
      const float v = yk[i];
      acc[i] += (v > 0.0f ? v : v * ak[i]) * wk[i];
    }
  }
}

// out += x * w over c channels.
inline void AxpyRow(int64_t c, const float* __restrict__ x, const float* __restrict__ w,
                    float* __restrict__ out) {
  for (int64_t i = 0; i < c; ++i) out[i] += x[i] * w[i];
}

// One pixel, one edge of a free term's gradient: dx += g * w, dw += g * x.
inline void FreeGradRow(int64_t c, const float* __restrict__ g, const float* __restrict__ x,
                        const float* __restrict__ w, float* __restrict__ dx,
                        float* __restrict__ dw) {
  for (int64_t i = 0; i < c; ++i) {
    dx[i] += g[i] * w[i];
    dw[i] += g[i] * x[i];
  }
}

// ------------------------------------------------------------------- BatsAffineSign

REGISTER_OP("BatsAffineSign")
    .Input("x: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("z: float")
    .Attr("pads: list(int)")
    .Attr("pad_value: float")
    .Attr("binarize: bool")
    .SetShapeFn([](InferenceContext* c) {
      ShapeHandle x, gamma;
      TF_RETURN_IF_ERROR(c->WithRank(c->input(0), 4, &x));
      TF_RETURN_IF_ERROR(c->WithRank(c->input(1), 1, &gamma));
      std::vector<int> pads;
      TF_RETURN_IF_ERROR(c->GetAttr("pads", &pads));
      if (pads.size() != 4) return InvalidArgument("pads must have 4 values");
      DimensionHandle h, w;
      TF_RETURN_IF_ERROR(c->Add(c->Dim(x, 1), pads[0] + pads[1], &h));
      TF_RETURN_IF_ERROR(c->Add(c->Dim(x, 2), pads[2] + pads[3], &w));
      c->set_output(0, c->MakeShape({c->Dim(x, 0), h, w, c->Dim(gamma, 0)}));
      return Status();
    });

REGISTER_OP("BatsAffineSignGrad")
    .Input("dz: float")
    .Input("x: float")
    .Input("gamma: float")
    .Input("beta: float")
    .Output("dx: float")
    .Output("dgamma: float")
    .Output("dbeta: float")
    .Attr("pads: list(int)")
    .Attr("binarize: bool")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(1));
      c->set_output(1, c->input(2));
      c->set_output(2, c->input(3));
      return Status();
    });

// Shapes shared by the forward and backward kernels.
struct AffineDims {
  int64_t n, h, w, c, d, e, hp, wp;
  std::vector<int> pads;
};

Status CheckAffine(const Tensor& x, const Tensor& gamma, const Tensor& beta,
                   const std::vector<int>& pads, AffineDims* dims) {
  if (x.dims() != 4) return InvalidArgument("x must be 4-D (N, H, W, C)");
  if (gamma.dims() != 1 || beta.shape() != gamma.shape())
    return InvalidArgument("gamma and beta must be vectors of one length");
  dims->n = x.dim_size(0), dims->h = x.dim_size(1), dims->w = x.dim_size(2);
  dims->c = x.dim_size(3), dims->d = gamma.dim_size(0);
  if (dims->c == 0 || dims->d % dims->c != 0)
    return InvalidArgument("gamma length must be a multiple of x's channels");
  dims->e = dims->d / dims->c;
  dims->pads = pads;
  dims->hp = dims->h + pads[0] + pads[1];
  dims->wp = dims->w + pads[2] + pads[3];
  return Status();
}

// The attributes shared by BatsAffineSign and its gradient.
class AffineKernel : public OpKernel {
 public:
  explicit AffineKernel(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pads", &pads_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("binarize", &binarize_));
    OP_REQUIRES(ctx, pads_.size() == 4, InvalidArgument("pads must have 4 values"));
  }

 protected:
  std::vector<int> pads_;
  bool binarize_;
};

class AffineSignOp : public AffineKernel {
 public:
  explicit AffineSignOp(OpKernelConstruction* ctx) : AffineKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("pad_value", &pad_value_));
  }

  void Compute(OpKernelContext* ctx) override {
    const Tensor &x = ctx->input(0), &gamma = ctx->input(1), &beta = ctx->input(2);
    AffineDims s;
    OP_REQUIRES_OK(ctx, CheckAffine(x, gamma, beta, pads_, &s));
    Tensor* z = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, TensorShape({s.n, s.hp, s.wp, s.d}), &z));
    const float* xp = x.flat<float>().data();
    const float* g = gamma.flat<float>().data();
    const float* bt = beta.flat<float>().data();
    float* zp = z->flat<float>().data();
    const float pad = pad_value_;
    const bool binarize = binarize_;
    ParallelRows(ctx, s.n * s.hp, s.wp * s.d * 2, [&](int64_t begin, int64_t end) {
      for (int64_t row = begin; row < end; ++row) {
        const int64_t b = row / s.hp, i = row % s.hp - s.pads[0];
        float* out = zp + row * s.wp * s.d;
        if (i < 0 || i >= s.h) {
          std::fill(out, out + s.wp * s.d, pad);
          continue;
        }
        for (int64_t jp = 0; jp < s.wp; ++jp, out += s.d) {
          const int64_t j = jp - s.pads[2];
          if (j < 0 || j >= s.w) {
            std::fill(out, out + s.d, pad);
            continue;
          }
          const float* in = xp + ((b * s.h + i) * s.w + j) * s.c;
          for (int64_t e = 0; e < s.e; ++e) {
            const int64_t o = e * s.c;
            for (int64_t k = 0; k < s.c; ++k) {
              const float v = g[o + k] * in[k] + bt[o + k];
              out[o + k] = binarize ? (v >= 0.0f ? 1.0f : -1.0f) : v;
            }
          }
        }
      }
    });
  }

 private:
  float pad_value_;
};

class AffineSignGradOp : public AffineKernel {
 public:
  using AffineKernel::AffineKernel;

  void Compute(OpKernelContext* ctx) override {
    const Tensor &dz = ctx->input(0), &x = ctx->input(1);
    const Tensor &gamma = ctx->input(2), &beta = ctx->input(3);
    AffineDims s;
    OP_REQUIRES_OK(ctx, CheckAffine(x, gamma, beta, pads_, &s));
    OP_REQUIRES(ctx, dz.shape() == TensorShape({s.n, s.hp, s.wp, s.d}),
                InvalidArgument("dz does not match the padded output shape"));
    Tensor *dx = nullptr, *dgamma = nullptr, *dbeta = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, x.shape(), &dx));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(1, gamma.shape(), &dgamma));
    OP_REQUIRES_OK(ctx, ctx->allocate_output(2, beta.shape(), &dbeta));
    const float* dzp = dz.flat<float>().data();
    const float* xp = x.flat<float>().data();
    const float* g = gamma.flat<float>().data();
    const float* bt = beta.flat<float>().data();
    float* dxp = dx->flat<float>().data();
    const int64_t rows = s.n * s.h, shards = std::min<int64_t>(kShards, std::max<int64_t>(rows, 1));
    std::vector<float> partial(shards * 2 * s.d, 0.0f);  // per shard: dgamma, dbeta
    const bool binarize = binarize_;
    ParallelRows(ctx, shards, rows / shards * s.w * s.d * 6, [&](int64_t sb, int64_t se) {
      for (int64_t sh = sb; sh < se; ++sh) {
        float* pg = partial.data() + sh * 2 * s.d;
        float* pb = pg + s.d;
        int64_t begin, end;
        ShardRange(rows, shards, sh, &begin, &end);
        for (int64_t row = begin; row < end; ++row) {
          const int64_t b = row / s.h, i = row % s.h;
          for (int64_t j = 0; j < s.w; ++j) {
            const int64_t pix = (b * s.h + i) * s.w + j;
            const float* in = xp + pix * s.c;
            float* dout = dxp + pix * s.c;
            const float* grad =
                dzp + ((b * s.hp + i + s.pads[0]) * s.wp + j + s.pads[2]) * s.d;
            for (int64_t k = 0; k < s.c; ++k) dout[k] = 0.0f;
            for (int64_t e = 0; e < s.e; ++e) {
              const int64_t o = e * s.c;
              AffineSignGradRow(s.c, binarize, in, g + o, bt + o, grad + o, dout, pg + o, pb + o);
            }
          }
        }
      }
    });
    std::vector<float> total(2 * s.d);
    SumShards(partial, shards, 2 * s.d, total.data());
    std::copy(total.begin(), total.begin() + s.d, dgamma->flat<float>().data());
    std::copy(total.begin() + s.d, total.end(), dbeta->flat<float>().data());
  }
};

REGISTER_KERNEL_BUILDER(Name("BatsAffineSign").Device(DEVICE_CPU), AffineSignOp);
REGISTER_KERNEL_BUILDER(Name("BatsAffineSignGrad").Device(DEVICE_CPU), AffineSignGradOp);

// --------------------------------------------------------------------- BatsPreluMix

REGISTER_OP("BatsPreluMix")
    .Input("ys: K * float")
    .Input("alpha: float")
    .Input("weight: float")
    .Input("free: F * float")
    .Input("free_weight: float")
    .Output("out: float")
    .Attr("K: int >= 1")
    .Attr("F: int >= 0")
    .Attr("edges: int >= 1")
    .Attr("groups: int >= 1")
    .SetShapeFn([](InferenceContext* c) {
      c->set_output(0, c->input(0));
      return Status();
    });

REGISTER_OP("BatsPreluMixGrad")
    .Input("dout: float")
    .Input("ys: K * float")
    .Input("alpha: float")
    .Input("weight: float")
    .Input("free: F * float")
    .Input("free_weight: float")
    .Output("dys: K * float")
    .Output("dalpha: float")
    .Output("dweight: float")
    .Output("dfree: F * float")
    .Output("dfree_weight: float")
    .Attr("K: int >= 1")
    .Attr("F: int >= 0")
    .Attr("edges: int >= 1")
    .Attr("groups: int >= 1")
    .SetShapeFn([](InferenceContext* c) {
      int k, f;
      TF_RETURN_IF_ERROR(c->GetAttr("K", &k));
      TF_RETURN_IF_ERROR(c->GetAttr("F", &f));
      for (int i = 0; i < k + 2 + f + 1; ++i) c->set_output(i, c->input(1 + i));
      return Status();
    });

// Output channel of input channel d: within each edge's C channels, the ShuffleNet
// interleaving of `groups` groups ((g, C/g) -> (C/g, g)).
std::vector<int64_t> ShufflePerm(int64_t d, int64_t edges, int64_t groups) {
  const int64_t c = d / edges, per = c / groups;
  std::vector<int64_t> perm(d);
  for (int64_t e = 0; e < edges; ++e)
    for (int64_t gi = 0; gi < groups; ++gi)
      for (int64_t j = 0; j < per; ++j) perm[e * c + gi * per + j] = e * c + j * groups + gi;
  return perm;
}

// Inputs of BatsPreluMix and its gradient, checked.
struct MixInputs {
  tensorflow::OpInputList ys, free;
  const Tensor *alpha, *weight, *free_weight;
  int64_t d, c, pixels;

  Status Read(OpKernelContext* ctx, int64_t edges, int64_t groups) {
    TF_RETURN_IF_ERROR(ctx->input_list("ys", &ys));
    TF_RETURN_IF_ERROR(ctx->input_list("free", &free));
    TF_RETURN_IF_ERROR(ctx->input("alpha", &alpha));
    TF_RETURN_IF_ERROR(ctx->input("weight", &weight));
    TF_RETURN_IF_ERROR(ctx->input("free_weight", &free_weight));
    const TensorShape& shape = ys[0].shape();
    if (shape.dims() < 1) return InvalidArgument("ys must have a channel axis");
    for (const Tensor& y : ys)
      if (y.shape() != shape) return InvalidArgument("all ys must have one shape");
    d = shape.dim_size(shape.dims() - 1);
    if (d % edges != 0 || (d / edges) % groups != 0)
      return InvalidArgument("channels must split into edges and groups");
    c = d / edges;
    pixels = ys[0].NumElements() / std::max<int64_t>(d, 1);
    const TensorShape params({ys.size(), d});
    if (alpha->shape() != params || weight->shape() != params)
      return InvalidArgument("alpha and weight must be (K, channels)");
    if (free_weight->shape() != TensorShape({free.size(), d}))
      return InvalidArgument("free_weight must be (F, channels)");
    TensorShape free_shape = shape;
    free_shape.set_dim(shape.dims() - 1, c);
    for (const Tensor& f : free)
      if (f.shape() != free_shape) return InvalidArgument("free terms must be ys with C channels");
    for (const Tensor& t : ys) y.push_back(t.flat<float>().data());
    for (const Tensor& t : free) fr.push_back(t.flat<float>().data());
    a = alpha->flat<float>().data();
    w = weight->flat<float>().data();
    fw = free_weight->flat<float>().data();
    perm = ShufflePerm(d, edges, groups);
    return Status();
  }

  // Data of ys, free terms, alpha, weight and free_weight; the output channel of each channel.
  std::vector<const float*> y, fr;
  const float *a, *w, *fw;
  std::vector<int64_t> perm;
};

// The attributes shared by BatsPreluMix and its gradient.
class MixKernel : public OpKernel {
 public:
  explicit MixKernel(OpKernelConstruction* ctx) : OpKernel(ctx) {
    OP_REQUIRES_OK(ctx, ctx->GetAttr("edges", &edges_));
    OP_REQUIRES_OK(ctx, ctx->GetAttr("groups", &groups_));
  }

 protected:
  int64_t edges_, groups_;
};

class PreluMixOp : public MixKernel {
 public:
  using MixKernel::MixKernel;

  void Compute(OpKernelContext* ctx) override {
    MixInputs in;
    OP_REQUIRES_OK(ctx, in.Read(ctx, edges_, groups_));
    Tensor* out = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output(0, in.ys[0].shape(), &out));
    const int k_count = in.ys.size(), f_count = in.free.size();
    const int64_t d = in.d, c = in.c, edges = edges_;
    float* op = out->flat<float>().data();
    ParallelRows(ctx, in.pixels, d * (k_count + f_count) * 3, [&](int64_t begin, int64_t end) {
      std::vector<float> acc(d);
      for (int64_t p = begin; p < end; ++p) {
        PreluMixRow(d, k_count, in.y.data(), p * d, in.a, in.w, acc.data());
        float* o = op + p * d;
        for (int64_t i = 0; i < d; ++i) o[in.perm[i]] = acc[i];
        for (int f = 0; f < f_count; ++f)
          for (int64_t e = 0; e < edges; ++e)
            AxpyRow(c, in.fr[f] + p * c, in.fw + f * d + e * c, o + e * c);
      }
    });
  }
};

class PreluMixGradOp : public MixKernel {
 public:
  using MixKernel::MixKernel;

  void Compute(OpKernelContext* ctx) override {
    MixInputs in;
    OP_REQUIRES_OK(ctx, in.Read(ctx, edges_, groups_));
    const Tensor& dout = ctx->input(0);
    OP_REQUIRES(ctx, dout.shape() == in.ys[0].shape(),
                InvalidArgument("dout must have the shape of ys"));
    const int k_count = in.ys.size(), f_count = in.free.size();
    const int64_t d = in.d, c = in.c, edges = edges_, pixels = in.pixels;
    tensorflow::OpOutputList dys, dfree;
    OP_REQUIRES_OK(ctx, ctx->output_list("dys", &dys));
    OP_REQUIRES_OK(ctx, ctx->output_list("dfree", &dfree));
    std::vector<float*> dy(k_count), dfr(f_count);
    for (int k = 0; k < k_count; ++k) {
      Tensor* t = nullptr;
      OP_REQUIRES_OK(ctx, dys.allocate(k, in.ys[k].shape(), &t));
      dy[k] = t->flat<float>().data();
    }
    for (int f = 0; f < f_count; ++f) {
      Tensor* t = nullptr;
      OP_REQUIRES_OK(ctx, dfree.allocate(f, in.free[f].shape(), &t));
      dfr[f] = t->flat<float>().data();
    }
    Tensor *dalpha = nullptr, *dweight = nullptr, *dfree_weight = nullptr;
    OP_REQUIRES_OK(ctx, ctx->allocate_output("dalpha", in.alpha->shape(), &dalpha));
    OP_REQUIRES_OK(ctx, ctx->allocate_output("dweight", in.weight->shape(), &dweight));
    OP_REQUIRES_OK(ctx,
                   ctx->allocate_output("dfree_weight", in.free_weight->shape(), &dfree_weight));
    const int64_t n = k_count * d, nf = f_count * d, width = 2 * n + nf;
    const float* g = dout.flat<float>().data();
    const int64_t shards = std::min<int64_t>(kShards, std::max<int64_t>(pixels, 1));
    // Per shard: dalpha, dweight, dfree_weight.
    std::vector<float> partial(shards * width, 0.0f);
    const int64_t cost = pixels / shards * (n + nf) * 8;
    ParallelRows(ctx, shards, cost, [&](int64_t sb, int64_t se) {
      std::vector<float> grad(d);
      for (int64_t sh = sb; sh < se; ++sh) {
        float* pa = partial.data() + sh * width;
        float *pw = pa + n, *pf = pa + 2 * n;
        int64_t begin, end;
        ShardRange(pixels, shards, sh, &begin, &end);
        for (int64_t p = begin; p < end; ++p) {
          const float* gp = g + p * d;
          for (int64_t i = 0; i < d; ++i) grad[i] = gp[in.perm[i]];
          for (int k = 0; k < k_count; ++k) {
            PreluMixGradRow(d, grad.data(), in.y[k] + p * d, in.a + k * d, in.w + k * d,
                            dy[k] + p * d, pa + k * d, pw + k * d);
          }
          for (int f = 0; f < f_count; ++f) {
            float* df = dfr[f] + p * c;
            for (int64_t i = 0; i < c; ++i) df[i] = 0.0f;
            for (int64_t e = 0; e < edges; ++e)
              FreeGradRow(c, gp + e * c, in.fr[f] + p * c, in.fw + f * d + e * c, df,
                          pf + f * d + e * c);
          }
        }
      }
    });
    std::vector<float> total(width);
    SumShards(partial, shards, width, total.data());
    std::copy(total.begin(), total.begin() + n, dalpha->flat<float>().data());
    std::copy(total.begin() + n, total.begin() + 2 * n, dweight->flat<float>().data());
    std::copy(total.begin() + 2 * n, total.end(), dfree_weight->flat<float>().data());
  }
};

REGISTER_KERNEL_BUILDER(Name("BatsPreluMix").Device(DEVICE_CPU), PreluMixOp);
REGISTER_KERNEL_BUILDER(Name("BatsPreluMixGrad").Device(DEVICE_CPU), PreluMixGradOp);

}  // namespace bats
