// Macros shared by the AVX2 kernels of package vec.

// WIDEN converts the 8 floats of ymm src into doubles added to lo and hi
// (t is scratch).
#define WIDEN(src, xsrc, t, xt, lo, hi) \
	VCVTPS2PD xsrc, t; \
	VADDPD t, lo, lo; \
	VEXTRACTF128 $1, src, xt; \
	VCVTPS2PD xt, t; \
	VADDPD t, hi, hi

// HSUM reduces lo+hi (ymm of doubles) into the low double of xlo.
#define HSUM(lo, hi, xlo, xhi) \
	VADDPD hi, lo, lo; \
	VEXTRACTF128 $1, lo, xhi; \
	VADDPD xhi, xlo, xlo; \
	VUNPCKHPD xlo, xlo, xhi; \
	VADDSD xhi, xlo, xlo
