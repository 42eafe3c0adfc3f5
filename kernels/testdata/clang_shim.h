// Declarations NVRTC provides built in, for checking the kernels with
// clang's CUDA front end on a machine without the CUDA toolkit
// (kernels_test.go). Only what the kernels use is declared.
#define __global__ __attribute__((global))
#define __device__ __attribute__((device))
#define __shared__ __attribute__((shared))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __launch_bounds__(...) __attribute__((launch_bounds(__VA_ARGS__)))
#include <__clang_cuda_builtin_vars.h>
__device__ float __uint_as_float(unsigned);
__device__ unsigned __float_as_uint(float);
__device__ float __int_as_float(int);
__device__ float __shfl_xor_sync(unsigned, float, int);
__device__ double __shfl_xor_sync(unsigned, double, int);
__device__ float __shfl_sync(unsigned, float, int);
__device__ float __expf(float);
__device__ float expf(float);
__device__ float logf(float);
__device__ float rsqrtf(float);
__device__ float sqrtf(float);
__device__ float fmaxf(float, float);
__device__ int min(int, int);
__device__ int atomicCAS(int*, int, int);
__device__ double atomicAdd(double*, double);
__device__ void sincos(double, double*, double*);
__device__ void __syncthreads();
#define __align__(n) __attribute__((aligned(n)))
__device__ unsigned long __cvta_generic_to_shared(const void*);
__device__ float log2f(float);
__device__ int max(int, int);
__device__ int atomicAdd(int*, int);
__device__ int atomicExch(int*, int);
__device__ void __threadfence();
