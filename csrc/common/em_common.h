// Shared by every kernel family and both backends: the host/device marker, the
// storage types the native core reads and writes, and their float conversions.
// No CUDA or torch headers here, so CPU translation units compile with plain g++.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define EM_HD __host__ __device__ __forceinline__
#else
#define EM_HD inline
#endif

// CPU leaf loops carry an AVX2 clone besides the baseline x86-64 one, chosen at load time, so
// one wheel runs everywhere and still uses AVX2 where it exists (2x on 16-bit conversions).
#if !defined(__CUDACC__) && defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define EM_CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define EM_CPU_CLONES
#endif

// Forward declaration in the style of gsplat: launchers can name a stream without cuda_runtime.h.
struct CUstream_st;
using cudaStream_t = CUstream_st*;

namespace em {

// Dtype codes passed across the binding; mirrored by em_accel/ops/_common.py::DType
// and checked at import.
enum class DType : int { F32 = 0, F64 = 1, F16 = 2, BF16 = 3 };

// 16-bit storage types: bit patterns only, converted with the functions below so
// that host and device run exactly the same rounding.
struct f16 { uint16_t bits; };
struct bf16 { uint16_t bits; };

EM_HD uint32_t float_bits(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
EM_HD float bits_float(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

EM_HD float to_float(f16 h) {
  // Exponent rebias by one multiply: the half's bits shifted into a float scale by 2^-112, which
  // is exact for normals and subnormals alike (float subnormal times a power of two); inf/NaN get
  // the float exponent by a select, so the conversion is branch-free and vectorises.
  const uint32_t sign = uint32_t(h.bits & 0x8000u) << 16;
  const uint32_t em = uint32_t(h.bits & 0x7fffu) << 13;
  const float finite = bits_float(em) * 5.192296858534828e33f;  // 2^112
  const uint32_t magnitude = em >= (0x7c00u << 13) ? (em | 0x7f800000u) : float_bits(finite);
  return bits_float(sign | magnitude);
}

EM_HD f16 to_f16(float f) {  // round to nearest even, like torch's .half()
  uint32_t x = float_bits(f);
  const uint16_t sign = uint16_t((x >> 16) & 0x8000u);
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) return f16{uint16_t(sign | (x > 0x7f800000u ? 0x7e00u : 0x7c00u))};
  if (x >= 0x477ff000u) return f16{uint16_t(sign | 0x7c00u)};  // >= 65520 rounds to inf
  if (x < 0x38800000u) {  // below 2^-14: subnormal half; |f| * 2^24 is exact, rintf rounds to even
    return f16{uint16_t(sign | uint16_t(rintf(bits_float(x) * 16777216.0f)))};
  }
  const uint32_t r = x + 0xfffu + ((x >> 13) & 1u);
  return f16{uint16_t(sign | ((r >> 13) - (112u << 10)))};
}

EM_HD float to_float(bf16 h) { return bits_float(uint32_t(h.bits) << 16); }

EM_HD bf16 to_bf16(float f) {  // round to nearest even, NaN kept quiet; branch-free so loops vectorise
  const uint32_t x = float_bits(f);
  const uint32_t rounded = (x + 0x7fffu + ((x >> 16) & 1u)) >> 16;
  const uint32_t quiet = ((x >> 16) & 0x8000u) | 0x7fc0u;
  return bf16{uint16_t((x & 0x7fffffffu) > 0x7f800000u ? quiet : rounded)};
}

// Storage<T>: how a kernel reads and writes T, and the type it accumulates in
// (float for 32- and 16-bit data, double for float64).
template <class T> struct Storage;
template <> struct Storage<float> {
  using acc = float;
  EM_HD static float load(const float* p, int64_t i) { return p[i]; }
  EM_HD static void store(float* p, int64_t i, float v) { p[i] = v; }
};
template <> struct Storage<double> {
  using acc = double;
  EM_HD static double load(const double* p, int64_t i) { return p[i]; }
  EM_HD static void store(double* p, int64_t i, double v) { p[i] = v; }
};
template <> struct Storage<f16> {
  using acc = float;
  EM_HD static float load(const f16* p, int64_t i) { return to_float(p[i]); }
  EM_HD static void store(f16* p, int64_t i, float v) { p[i] = to_f16(v); }
};
template <> struct Storage<bf16> {
  using acc = float;
  EM_HD static float load(const bf16* p, int64_t i) { return to_float(p[i]); }
  EM_HD static void store(bf16* p, int64_t i, float v) { p[i] = to_bf16(v); }
};

EM_HD bool is_finite(float v) { return (float_bits(v) & 0x7f800000u) != 0x7f800000u; }
EM_HD bool is_finite(double v) {
  uint64_t u; memcpy(&u, &v, 8);
  return (u & 0x7ff0000000000000ull) != 0x7ff0000000000000ull;
}

}  // namespace em
