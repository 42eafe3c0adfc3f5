// Package vec holds vectorized elementwise kernels of the CPU backend:
// exp over slices (AVX-512 or AVX2 assembly, chosen at run time, with a
// pure Go fallback), accurate to about 1e-7 relative; exp with a sum, and
// the maximum, for softmax rows (AVX2, also used on AVX-512 machines).
package vec

import "math"

// Exp replaces every element x of v with e^x. Inputs above 88.72 give +Inf
// and below -87.33 give 0 (float32 range); NaN stays NaN.
func Exp(v []float32) {
	n := 0
	if expKernel != nil {
		if n = len(v) / 16 * 16; n > 0 {
			expKernel(v[:n])
		}
	}
	for i := n; i < len(v); i++ {
		v[i] = expf(v[i])
	}
}

// expKernel processes a multiple of 16 elements, or is nil.
var expKernel func(v []float32)

// Polynomial for e^r, |r| <= ln2/2 (Cephes expf coefficients).
const (
	c6 = 1.9875691500e-4
	c5 = 1.3981999507e-3
	c4 = 8.3334519073e-3
	c3 = 4.1665795894e-2
	c2 = 1.6666665459e-1
	c1 = 5.0000001201e-1

	ln2Hi = 0.693359375
	ln2Lo = -2.12194440e-4
	log2e = 1.44269504088896341
	maxX  = 88.72
	minX  = -87.33
)

// expf is the scalar version of the vector kernels.
func expf(x float32) float32 {
	switch {
	case x != x:
		return x
	case x > maxX:
		return float32(math.Inf(1))
	case x < minX:
		return 0
	}
	n := float32(math.Floor(float64(x*log2e + 0.5)))
	r := x - n*ln2Hi - n*ln2Lo
	p := float32(c6)
	p = p*r + c5
	p = p*r + c4
	p = p*r + c3
	p = p*r + c2
	p = p*r + c1
	p = p*r*r + r + 1
	if n > 127 { // 2^128 is not a float32: scale by 2^127 twice over
		p, n = 2*p, 127
	}
	return p * math.Float32frombits(uint32(int32(n)+127)<<23)
}

// ExpSum sets dst[i] = e^(src[i]*scale - shift) (with Exp's handling of
// large, small and NaN arguments) and returns the sum of the results,
// accumulated in float64. dst may be src; len(dst) must be len(src).
func ExpSum(dst, src []float32, scale, shift float32) float64 {
	return ExpSumFetch(dst, src, scale, shift, nil)
}

// ExpSumFetch is ExpSum that also brings up to len(src) floats of next
// into cache while it computes, for a caller that reads next (a row not
// yet in cache) right after; next may be nil. The results are ExpSum's.
func ExpSumFetch(dst, src []float32, scale, shift float32, next []float32) float64 {
	if len(dst) != len(src) {
		panic("vec: ExpSum of slices of different lengths")
	}
	var s float64
	n := 0
	if expSumKernel != nil {
		if n = len(src) / 8 * 8; n > 0 {
			s = expSumKernel(dst[:n], src[:n], scale, shift, next)
		}
	}
	for i := n; i < len(src); i++ {
		e := expf(src[i]*scale - shift)
		dst[i] = e
		s += float64(e)
	}
	return s
}

// Max returns the largest element of v (len(v) > 0). Where v holds a NaN
// the result may or may not be NaN; callers that exponentiate v see the
// NaN there.
func Max(v []float32) float32 {
	m := v[0]
	n := 0
	if maxKernel != nil {
		if n = len(v) &^ 7; n > 0 {
			m = maxKernel(v[:n])
		}
	}
	for _, x := range v[n:] {
		m = max(m, x)
	}
	return m
}

// expSumKernel processes a multiple of 8 elements, prefetching as many
// from next unless next is empty, or is nil.
var expSumKernel func(dst, src []float32, scale, shift float32, next []float32) float64

// maxKernel reduces a multiple of 8 elements, or is nil.
var maxKernel func(v []float32) float32

// DotDiff returns Σ w[i]·(x[i]−y[i]) accumulated in float64; x and y are
// at least as long as w.
func DotDiff(w, x, y []float32) float64 {
	x, y = x[:len(w)], y[:len(w)]
	var s float64
	n := 0
	if dotDiffKernel != nil {
		if n = len(w) &^ 7; n > 0 {
			s = dotDiffKernel(w[:n], x[:n], y[:n])
		}
	}
	for i := n; i < len(w); i++ {
		s += float64(w[i]) * (float64(x[i]) - float64(y[i]))
	}
	return s
}

// Sum returns Σ v[i] accumulated in float64.
func Sum(v []float32) float64 {
	var s float64
	n := 0
	if sumKernel != nil {
		if n = len(v) &^ 7; n > 0 {
			s = sumKernel(v[:n])
		}
	}
	for _, x := range v[n:] {
		s += float64(x)
	}
	return s
}

// SumSqDev returns Σ (v[i]−mean)² accumulated in float64.
func SumSqDev(v []float32, mean float64) float64 {
	var s float64
	n := 0
	if sumSqDevKernel != nil {
		if n = len(v) &^ 7; n > 0 {
			s = sumSqDevKernel(v[:n], mean)
		}
	}
	for _, x := range v[n:] {
		d := float64(x) - mean
		s += d * d
	}
	return s
}

// Dot returns Σ x[i]·y[i], each product rounded to float32 and the sum
// accumulated in float64; y is at least as long as x.
func Dot(x, y []float32) float64 {
	y = y[:len(x)]
	var s float64
	n := 0
	if dotKernel != nil {
		if n = len(x) &^ 7; n > 0 {
			s = dotKernel(x[:n], y[:n])
		}
	}
	for i := n; i < len(x); i++ {
		s += float64(x[i] * y[i])
	}
	return s
}

// Norm sets out[i] = (x[i]−mean)·rstd·w[i] + b[i] (no b term when b is nil),
// a normalization's row; out may be x.
func Norm(out, x, w, b []float32, mean, rstd float32) {
	out, w = out[:len(x)], w[:len(x)]
	if b != nil {
		b = b[:len(x)]
	}
	n := 0
	if normKernel != nil {
		if n = len(x) &^ 7; n > 0 {
			var bn []float32
			if b != nil {
				bn = b[:n]
			}
			normKernel(out[:n], x[:n], w[:n], bn, mean, rstd)
		}
	}
	for i := n; i < len(x); i++ {
		y := (x[i] - mean) * rstd * w[i]
		if b != nil {
			y += b[i]
		}
		out[i] = y
	}
}

// NormGradIn is the first pass of a normalization's backward over a row:
// xhat[i] = (x[i]−mean)·rstd, dy[i] = g[i]·w[i], and the parameter
// gradients aw[i] += g[i]·xhat[i], ab[i] += g[i] in float64.
func NormGradIn(xhat, dy, x, g, w []float32, aw, ab []float64, mean, rstd float32) {
	xhat, dy, g, w, aw, ab = xhat[:len(x)], dy[:len(x)], g[:len(x)], w[:len(x)], aw[:len(x)], ab[:len(x)]
	n := 0
	if normGradInKernel != nil {
		if n = len(x) &^ 7; n > 0 {
			normGradInKernel(xhat[:n], dy[:n], x[:n], g[:n], w[:n], aw[:n], ab[:n], mean, rstd)
		}
	}
	for i := n; i < len(x); i++ {
		xh := (x[i] - mean) * rstd
		xhat[i] = xh
		dy[i] = g[i] * w[i]
		aw[i] += float64(g[i] * xh)
		ab[i] += float64(g[i])
	}
}

// NormGradOut is the last pass of a normalization's backward over a row:
// dx[i] = rstd·(dy[i] − mdy − xhat[i]·mdyx).
func NormGradOut(dx, dy, xhat []float32, rstd, mdy, mdyx float32) {
	dx, xhat = dx[:len(dy)], xhat[:len(dy)]
	n := 0
	if normGradOutKernel != nil {
		if n = len(dy) &^ 7; n > 0 {
			normGradOutKernel(dx[:n], dy[:n], xhat[:n], rstd, mdy, mdyx)
		}
	}
	for i := n; i < len(dy); i++ {
		dx[i] = rstd * (dy[i] - mdy - xhat[i]*mdyx)
	}
}

// Reductions and normalization passes over a multiple of 8 elements, or nil.
var (
	sumKernel         func(v []float32) float64
	sumSqDevKernel    func(v []float32, mean float64) float64
	dotKernel         func(x, y []float32) float64
	dotDiffKernel     func(w, x, y []float32) float64
	normKernel        func(out, x, w, b []float32, mean, rstd float32)
	normGradInKernel  func(xhat, dy, x, g, w []float32, aw, ab []float64, mean, rstd float32)
	normGradOutKernel func(dx, dy, xhat []float32, rstd, mdy, mdyx float32)
)

// ReLU2 sets out[i] = max(x[i], 0)²; out may be x.
func ReLU2(out, x []float32) {
	out = out[:len(x)]
	n := 0
	if relu2Kernel != nil {
		if n = len(x) &^ 7; n > 0 {
			relu2Kernel(out[:n], x[:n])
		}
	}
	for i := n; i < len(x); i++ {
		v := max(x[i], 0)
		out[i] = v * v
	}
}

// ReLU2Grad sets dx[i] = dout[i]·2·max(x[i], 0); dx may be dout or x.
func ReLU2Grad(dx, dout, x []float32) {
	dx, dout = dx[:len(x)], dout[:len(x)]
	n := 0
	if relu2GradKernel != nil {
		if n = len(x) &^ 7; n > 0 {
			relu2GradKernel(dx[:n], dout[:n], x[:n])
		}
	}
	for i := n; i < len(x); i++ {
		dx[i] = dout[i] * 2 * max(x[i], 0)
	}
}

// AXPBY sets dst[i] = a·x[i] + b·y[i]; dst may be x or y.
func AXPBY(dst, x, y []float32, a, b float32) {
	dst, y = dst[:len(x)], y[:len(x)]
	n := 0
	if axpbyKernel != nil {
		if n = len(x) &^ 7; n > 0 {
			axpbyKernel(dst[:n], x[:n], y[:n], a, b)
		}
	}
	for i := n; i < len(x); i++ {
		dst[i] = a*x[i] + b*y[i]
	}
}

// MulSub sets dst[i] = p[i]·(d[i] − c); dst may be p or d.
func MulSub(dst, p, d []float32, c float32) {
	dst, d = dst[:len(p)], d[:len(p)]
	n := 0
	if mulSubKernel != nil {
		if n = len(p) &^ 7; n > 0 {
			mulSubKernel(dst[:n], p[:n], d[:n], c)
		}
	}
	for i := n; i < len(p); i++ {
		dst[i] = p[i] * (d[i] - c)
	}
}

// Scale sets v[i] = v[i]·a.
func Scale(v []float32, a float32) {
	n := 0
	if scaleKernel != nil {
		if n = len(v) &^ 7; n > 0 {
			scaleKernel(v[:n], a)
		}
	}
	for i := n; i < len(v); i++ {
		v[i] *= a
	}
}

// Elementwise kernels over a multiple of 8 elements, or nil.
var (
	scaleKernel     func(v []float32, a float32)
	relu2Kernel     func(out, x []float32)
	relu2GradKernel func(dx, dout, x []float32)
	axpbyKernel     func(dst, x, y []float32, a, b float32)
	mulSubKernel    func(dst, p, d []float32, c float32)
)

// Rotate turns each pair (x1[i], x2[i]) by the angle whose cosine and sine
// are cos[i], sin[i]: x1 = x1·cos − x2·sin, x2 = x2·cos + x1·sin (rotary
// position embedding).
func Rotate(x1, x2, cos, sin []float32) {
	x2, cos, sin = x2[:len(x1)], cos[:len(x1)], sin[:len(x1)]
	n := 0
	if rotateKernel != nil {
		if n = len(x1) &^ 7; n > 0 {
			rotateKernel(x1[:n], x2[:n], cos[:n], sin[:n])
		}
	}
	for i := n; i < len(x1); i++ {
		a, c := x1[i], x2[i]
		x1[i] = a*cos[i] - c*sin[i]
		x2[i] = c*cos[i] + a*sin[i]
	}
}

// rotateKernel rotates a multiple of 8 pairs, or is nil.
var rotateKernel func(x1, x2, cos, sin []float32)
