package cpu

import (
	"fmt"
	"math"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu/gemm"
	"github.com/minitron/minitron/backend/cpu/vec"
)

// MatMul computes c = alpha*op(a)*op(b) + beta*c.
func (b *Backend) MatMul(c, x, y backend.Tensor, transA, transB bool, alpha, beta float32) error {
	const op = "MatMul"
	af, err := floats(op, x)
	if err != nil {
		return err
	}
	bf, err := floats(op, y)
	if err != nil {
		return err
	}
	cf, err := floats(op, c)
	if err != nil {
		return err
	}
	m, n, k, err := backend.MatMulShape(c, x, y, transA, transB)
	if err != nil {
		return err
	}
	gemm.Sgemm(transA, transB, m, n, k, alpha, af, backend.Cols(x), bf, backend.Cols(y), beta, cf, n)
	return nil
}

// Embedding gathers table rows by id.
func (b *Backend) Embedding(out, table, ids backend.Tensor) error {
	const op = "Embedding"
	id, err := ints(op, ids)
	if err != nil {
		return err
	}
	v, d := backend.Rows(table), backend.Cols(table)
	tf, err := mat(op, "table", table, v, d)
	if err != nil {
		return err
	}
	of, err := mat(op, "out", out, len(id), d)
	if err != nil {
		return err
	}
	for i, t := range id {
		if t < 0 || int(t) >= v {
			return fmt.Errorf("cpu: Embedding: token id %d at position %d is outside the vocabulary of %d", t, i, v)
		}
		copy(of[i*d:(i+1)*d], tf[int(t)*d:int(t+1)*d])
	}
	return nil
}

// EmbeddingBackward accumulates dout rows into dtable.
func (b *Backend) EmbeddingBackward(dtable, dout, ids backend.Tensor) error {
	const op = "EmbeddingBackward"
	id, err := ints(op, ids)
	if err != nil {
		return err
	}
	v, d := backend.Rows(dtable), backend.Cols(dtable)
	tf, err := mat(op, "dtable", dtable, v, d)
	if err != nil {
		return err
	}
	of, err := mat(op, "dout", dout, len(id), d)
	if err != nil {
		return err
	}
	for i, t := range id {
		if t < 0 || int(t) >= v {
			return fmt.Errorf("cpu: EmbeddingBackward: token id %d outside the vocabulary of %d", t, v)
		}
		row := tf[int(t)*d : int(t+1)*d]
		for j, g := range of[i*d : (i+1)*d] {
			row[j] += g
		}
	}
	return nil
}

// LayerNorm normalizes rows: (x-mean)*rstd*(w+wOffset) + bias.
func (b *Backend) LayerNorm(out, stats, x, w, bias backend.Tensor, eps, wOffset float32) error {
	const op = "LayerNorm"
	n, d := backend.Rows(x), backend.Cols(x)
	fs, err := mats(op, backend.Need("x", x, n, d), backend.Need("out", out, n, d), backend.Need("weight", w, 1, d),
		backend.Maybe("bias", bias, 1, d), backend.Maybe("stats", stats, n, 2))
	if err != nil {
		return err
	}
	xf, of, wf, bf, sf := fs[0], fs[1], fs[2], fs[3], fs[4]
	w1 := offsetWeight(wf, wOffset)
	b.parallelRows(n, 4*d, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := xf[i*d : (i+1)*d]
			mean := vec.Sum(row) / float64(d)
			rstd := 1 / math.Sqrt(vec.SumSqDev(row, mean)/float64(d)+float64(eps))
			m32, r32 := float32(mean), float32(rstd)
			vec.Norm(of[i*d:(i+1)*d], row, w1, bf, m32, r32)
			if sf != nil {
				sf[2*i], sf[2*i+1] = m32, r32
			}
		}
	})
	return nil
}

// offsetWeight returns w+off elementwise (w itself when off is 0).
func offsetWeight(w []float32, off float32) []float32 {
	if off == 0 {
		return w
	}
	w1 := make([]float32, len(w))
	for j, v := range w {
		w1[j] = v + off
	}
	return w1
}

// LayerNormBackward overwrites dx and accumulates dw and dbias.
func (b *Backend) LayerNormBackward(dx, dw, dbias, dout, x, w, stats backend.Tensor, wOffset float32) error {
	const op = "LayerNormBackward"
	n, d := backend.Rows(x), backend.Cols(x)
	fs, err := mats(op, backend.Need("x", x, n, d), backend.Need("dout", dout, n, d), backend.Need("dx", dx, n, d),
		backend.Need("weight", w, 1, d), backend.Need("dweight", dw, 1, d), backend.Need("stats", stats, n, 2), backend.Maybe("dbias", dbias, 1, d))
	if err != nil {
		return err
	}
	xf, df, dxf, wf, dwf, sf, dbf := fs[0], fs[1], fs[2], fs[3], fs[4], fs[5], fs[6]
	w1 := offsetWeight(wf, wOffset)
	b.parallelReduce(n, 8*d, d, func(lo, hi int, acc []float64) {
		xhat := make([]float32, d)
		dys := make([]float32, d)
		for i := lo; i < hi; i++ {
			mean, rstd := sf[2*i], sf[2*i+1]
			// xhat, dy = g·(w+off); dw += g·xhat, dbias += g
			vec.NormGradIn(xhat, dys, xf[i*d:(i+1)*d], df[i*d:(i+1)*d], w1, acc[:d], acc[d:2*d], mean, rstd)
			mDy, mDyX := float32(vec.Sum(dys)/float64(d)), float32(vec.Dot(dys, xhat)/float64(d))
			vec.NormGradOut(dxf[i*d:(i+1)*d], dys, xhat, rstd, mDy, mDyX)
		}
	}, dwf, dbf)
	return nil
}

// RMSNorm normalizes rows: x*rstd*w.
func (b *Backend) RMSNorm(out, stats, x, w backend.Tensor, eps float32) error {
	const op = "RMSNorm"
	n, d := backend.Rows(x), backend.Cols(x)
	fs, err := mats(op, backend.Need("x", x, n, d), backend.Need("out", out, n, d), backend.Need("weight", w, 1, d), backend.Maybe("stats", stats, n, 1))
	if err != nil {
		return err
	}
	xf, of, wf, sf := fs[0], fs[1], fs[2], fs[3]
	b.parallelRows(n, 3*d, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			row := xf[i*d : (i+1)*d]
			var ss float64
			for _, v := range row {
				ss += float64(v) * float64(v)
			}
			r := float32(1 / math.Sqrt(ss/float64(d)+float64(eps)))
			o := of[i*d : (i+1)*d]
			for j, v := range row {
				o[j] = v * r * wf[j]
			}
			if sf != nil {
				sf[i] = r
			}
		}
	})
	return nil
}

// RMSNormBackward overwrites dx and accumulates dw.
func (b *Backend) RMSNormBackward(dx, dw, dout, x, w, stats backend.Tensor) error {
	const op = "RMSNormBackward"
	n, d := backend.Rows(x), backend.Cols(x)
	fs, err := mats(op, backend.Need("x", x, n, d), backend.Need("dout", dout, n, d), backend.Need("dx", dx, n, d),
		backend.Need("weight", w, 1, d), backend.Need("dweight", dw, 1, d), backend.Need("stats", stats, n, 1))
	if err != nil {
		return err
	}
	xf, df, dxf, wf, dwf, sf := fs[0], fs[1], fs[2], fs[3], fs[4], fs[5]
	b.parallelReduce(n, 6*d, d, func(lo, hi int, acc []float64) {
		for i := lo; i < hi; i++ {
			r := sf[i]
			row, g := xf[i*d:(i+1)*d], df[i*d:(i+1)*d]
			var s float64
			for j, v := range row {
				s += float64(g[j] * wf[j] * v * r)
				acc[j] += float64(g[j] * v * r)
			}
			m := float32(s / float64(d))
			o := dxf[i*d : (i+1)*d]
			for j, v := range row {
				xh := v * r
				o[j] = r * (g[j]*wf[j] - xh*m)
			}
		}
	}, dwf)
	return nil
}

// RoPE rotates the first RotDim dims of every head of x in place.
func (b *Backend) RoPE(x, pos backend.Tensor, r backend.RoPE, inverse bool) error {
	const op = "RoPE"
	pf, err := ints(op, pos)
	if err != nil {
		return err
	}
	n, width := backend.Rows(x), backend.Cols(x)
	xf, err := mat(op, "x", x, len(pf), width)
	if err != nil {
		return err
	}
	if r.HeadDim <= 0 || width%r.HeadDim != 0 || r.RotDim%2 != 0 || r.RotDim > r.HeadDim || len(r.InvFreq) != r.RotDim/2 {
		return fmt.Errorf("cpu: RoPE: head dim %d, rotary dim %d, %d frequencies do not fit rows of %d", r.HeadDim, r.RotDim, len(r.InvFreq), width)
	}
	half := r.RotDim / 2
	sign := 1.0
	if inverse {
		sign = -1
	}
	angles := func(p int32, cos, sin []float32) {
		for j, f := range r.InvFreq {
			s, c := math.Sincos(float64(p) * float64(f))
			cos[j], sin[j] = float32(c), float32(sign*s)
		}
	}
	// Rows of a batch share positions (every sequence starts at 0): with
	// fewer positions than rows, each position's angles are computed once.
	var table []float32 // [maxPos+1][cos half, sin half]
	if maxPos := maxInt32(pf); half > 0 && int(maxPos)+1 <= n/2 {
		table = make([]float32, (int(maxPos)+1)*2*half)
		for p := range int(maxPos) + 1 {
			t := table[p*2*half : (p+1)*2*half]
			angles(int32(p), t[:half], t[half:])
		}
	}
	b.parallelRows(n, width*2, func(lo, hi int) {
		cosBuf := make([]float32, half)
		sinBuf := make([]float32, half)
		for i := lo; i < hi; i++ {
			cos, sin := cosBuf, sinBuf
			if table != nil && pf[i] >= 0 {
				t := table[int(pf[i])*2*half : (int(pf[i])+1)*2*half]
				cos, sin = t[:half], t[half:]
			} else {
				angles(pf[i], cos, sin)
			}
			row := xf[i*width : (i+1)*width]
			for h := 0; h < width; h += r.HeadDim {
				vec.Rotate(row[h:h+half], row[h+half:h+2*half], cos, sin)
			}
		}
	})
	return nil
}

func maxInt32(v []int32) int32 {
	m := int32(0)
	for _, x := range v {
		m = max(m, x)
	}
	return m
}

// ReLU2 computes max(x,0)².
func (b *Backend) ReLU2(out, x backend.Tensor) error {
	xf, of, err := sameFloats("ReLU2", x, out)
	if err != nil {
		return err
	}
	b.parallelRows(len(xf), 1, func(lo, hi int) { vec.ReLU2(of[lo:hi], xf[lo:hi]) })
	return nil
}

// ReLU2Backward computes dout*2*max(x,0).
func (b *Backend) ReLU2Backward(dx, dout, x backend.Tensor) error {
	xf, df, err := sameFloats("ReLU2Backward", x, dout)
	if err != nil {
		return err
	}
	_, dxf, err := sameFloats("ReLU2Backward", x, dx)
	if err != nil {
		return err
	}
	b.parallelRows(len(xf), 1, func(lo, hi int) { vec.ReLU2Grad(dxf[lo:hi], df[lo:hi], xf[lo:hi]) })
	return nil
}

func sigmoid(x float32) float32 { return float32(1 / (1 + math.Exp(-float64(x)))) }

// SwiGLU computes silu(gate)*up.
func (b *Backend) SwiGLU(out, gate, up backend.Tensor) error {
	gf, uf, err := sameFloats("SwiGLU", gate, up)
	if err != nil {
		return err
	}
	_, of, err := sameFloats("SwiGLU", gate, out)
	if err != nil {
		return err
	}
	b.parallelRows(len(gf), 8, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g := gf[i]
			of[i] = g * sigmoid(g) * uf[i]
		}
	})
	return nil
}

// SwiGLUBackward overwrites dgate and dup.
func (b *Backend) SwiGLUBackward(dgate, dup, dout, gate, up backend.Tensor) error {
	const op = "SwiGLUBackward"
	gf, uf, err := sameFloats(op, gate, up)
	if err != nil {
		return err
	}
	_, df, err := sameFloats(op, gate, dout)
	if err != nil {
		return err
	}
	_, dgf, err := sameFloats(op, gate, dgate)
	if err != nil {
		return err
	}
	_, duf, err := sameFloats(op, gate, dup)
	if err != nil {
		return err
	}
	b.parallelRows(len(gf), 8, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			g, u, d := gf[i], uf[i], df[i]
			s := sigmoid(g)
			dgf[i] = d * u * s * (1 + g*(1-s))
			duf[i] = d * g * s
		}
	})
	return nil
}

// Add computes a+b.
func (b *Backend) Add(out, x, y backend.Tensor) error {
	xf, yf, err := sameFloats("Add", x, y)
	if err != nil {
		return err
	}
	_, of, err := sameFloats("Add", x, out)
	if err != nil {
		return err
	}
	b.parallelRows(len(xf), 1, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			of[i] = xf[i] + yf[i]
		}
	})
	return nil
}

func sameFloats(op string, x, y backend.Tensor) ([]float32, []float32, error) {
	xf, err := floats(op, x)
	if err != nil {
		return nil, nil, err
	}
	yf, err := floats(op, y)
	if err != nil {
		return nil, nil, err
	}
	if len(xf) != len(yf) {
		return nil, nil, fmt.Errorf("cpu: %s: shapes %v and %v differ", op, x.Shape(), y.Shape())
	}
	return xf, yf, nil
}

// ScatterRows writes src rows to dst[rows[i]].
func (b *Backend) ScatterRows(dst, src, rows backend.Tensor) error {
	return b.moveRows("ScatterRows", dst, src, rows, true)
}

// GatherRows reads dst[i] = src[rows[i]].
func (b *Backend) GatherRows(dst, src, rows backend.Tensor) error {
	return b.moveRows("GatherRows", dst, src, rows, false)
}

func (b *Backend) moveRows(op string, dst, src, rows backend.Tensor, scatter bool) error {
	idx, err := ints(op, rows)
	if err != nil {
		return err
	}
	d := backend.Cols(src)
	if backend.Cols(dst) != d {
		return fmt.Errorf("cpu: %s: rows of %d and %d values", op, backend.Cols(dst), d)
	}
	df, err := floats(op, dst)
	if err != nil {
		return err
	}
	sf, err := floats(op, src)
	if err != nil {
		return err
	}
	many, few := backend.Rows(dst), backend.Rows(src)
	if !scatter {
		many, few = few, many
	}
	if few != len(idx) {
		return fmt.Errorf("cpu: %s: %d row indices for %d rows", op, len(idx), few)
	}
	for i, r := range idx {
		if r < 0 || int(r) >= many {
			return fmt.Errorf("cpu: %s: row index %d outside [0,%d)", op, r, many)
		}
		if scatter {
			copy(df[int(r)*d:int(r+1)*d], sf[i*d:(i+1)*d])
		} else {
			copy(df[i*d:(i+1)*d], sf[int(r)*d:int(r+1)*d])
		}
	}
	return nil
}

// CosineLoss computes 1 − cos(u, v) per row and optionally its gradient.
func (b *Backend) CosineLoss(losses, du, u, v backend.Tensor, scale float32) error {
	const op = "CosineLoss"
	n, d := backend.Rows(u), backend.Cols(u)
	fs, err := mats(op, backend.Need("u", u, n, d), backend.Need("v", v, n, d), backend.Need("losses", losses, n, 1), backend.Maybe("du", du, n, d))
	if err != nil {
		return err
	}
	uf, vf, lf, df := fs[0], fs[1], fs[2], fs[3]
	b.parallelRows(n, 4*d, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			ur, vr := uf[i*d:(i+1)*d], vf[i*d:(i+1)*d]
			var uv, uu, vv float64
			for j := range ur {
				uv += float64(ur[j]) * float64(vr[j])
				uu += float64(ur[j]) * float64(ur[j])
				vv += float64(vr[j]) * float64(vr[j])
			}
			nu, nv := math.Max(math.Sqrt(uu), 1e-8), math.Max(math.Sqrt(vv), 1e-8)
			c := uv / (nu * nv)
			lf[i] = float32(1 - c)
			if df == nil {
				continue
			}
			// d(1−cos)/du = −(v/(‖u‖‖v‖) − cos·u/‖u‖²)
			a, bb := -float64(scale)/(nu*nv), float64(scale)*c/(nu*nu)
			dr := df[i*d : (i+1)*d]
			for j := range dr {
				dr[j] = float32(a*float64(vr[j]) + bb*float64(ur[j]))
			}
		}
	})
	return nil
}

// CrossEntropy computes per-row losses and optionally their gradient.
func (b *Backend) CrossEntropy(losses, dlogits, logits, targets backend.Tensor, scale float32) error {
	const op = "CrossEntropy"
	tg, err := ints(op, targets)
	if err != nil {
		return err
	}
	n, v := len(tg), backend.Cols(logits)
	fs, err := mats(op, backend.Need("logits", logits, n, v), backend.Need("losses", losses, n, 1), backend.Maybe("dlogits", dlogits, n, v))
	if err != nil {
		return err
	}
	lf, loss, df := fs[0], fs[1], fs[2]
	for i, t := range tg {
		if int(t) >= v {
			return fmt.Errorf("cpu: CrossEntropy: target %d at row %d is outside the vocabulary of %d", t, i, v)
		}
	}
	b.parallelRows(n, 4*v, func(lo, hi int) {
		var scratch []float32
		for i := lo; i < hi; i++ {
			row := lf[i*v : (i+1)*v]
			t := tg[i]
			if t < 0 {
				loss[i] = 0
				if df != nil {
					clear(df[i*v : (i+1)*v])
				}
				continue
			}
			xt := row[t]
			mx := vec.Max(row)
			// e^(x-max) into the gradient row (which may be the logits
			// row itself) or a scratch row.
			var e []float32
			if df != nil {
				e = df[i*v : (i+1)*v]
			} else {
				if scratch == nil {
					scratch = make([]float32, v)
				}
				e = scratch
			}
			s := vec.ExpSum(e, row, 1, mx)
			loss[i] = float32(float64(mx) + math.Log(s) - float64(xt))
			if df != nil {
				vec.Scale(e, float32(float64(scale)/s))
				e[t] -= scale
			}
		}
	})
	return nil
}

// SquaredNorm sums squares in float64: each tensor in fixed chunks, the
// chunks and then the tensors added in order (deterministic).
func (b *Backend) SquaredNorm(ts ...backend.Tensor) (float64, error) {
	var total float64
	for _, t := range ts {
		f, err := floats("SquaredNorm", t)
		if err != nil {
			return 0, err
		}
		const chunk = 1 << 14
		n := (len(f) + chunk - 1) / chunk
		parts := make([]float64, n)
		b.parallelRows(n, chunk, func(lo, hi int) {
			for c := lo; c < hi; c++ {
				var s float64
				for _, x := range f[c*chunk : min((c+1)*chunk, len(f))] {
					s += float64(x) * float64(x)
				}
				parts[c] = s
			}
		})
		var s float64
		for _, p := range parts {
			s += p
		}
		total += s
	}
	return total, nil
}

// Scale multiplies in place.
func (b *Backend) Scale(t backend.Tensor, alpha float32) error {
	f, err := floats("Scale", t)
	if err != nil {
		return err
	}
	b.parallelRows(len(f), 1, func(lo, hi int) { vec.Scale(f[lo:hi], alpha) })
	return nil
}

// AdamW updates w, m and v in place (float32 storage: no rounding, so
// p.Seed and p.Offset are not used).
func (b *Backend) AdamW(w, g, m, v backend.Tensor, p backend.AdamW) error {
	const op = "AdamW"
	wf, gf, err := sameFloats(op, w, g)
	if err != nil {
		return err
	}
	_, mf, err := sameFloats(op, w, m)
	if err != nil {
		return err
	}
	_, vf, err := sameFloats(op, w, v)
	if err != nil {
		return err
	}
	if p.Step < 1 {
		return fmt.Errorf("cpu: AdamW: step %d, want >= 1", p.Step)
	}
	bc1 := 1 - math.Pow(float64(p.Beta1), float64(p.Step))
	bc2 := 1 - math.Pow(float64(p.Beta2), float64(p.Step))
	stepSize := float32(float64(p.LR) / bc1)
	bc2sqrt := float32(math.Sqrt(bc2))
	decay := 1 - p.LR*p.WeightDecay
	b.parallelRows(len(wf), 8, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			gi := gf[i] * p.GradScale
			mi := p.Beta1*mf[i] + (1-p.Beta1)*gi
			vi := p.Beta2*vf[i] + (1-p.Beta2)*gi*gi
			mf[i], vf[i] = mi, vi
			denom := float32(math.Sqrt(float64(vi)))/bc2sqrt + p.Eps
			wf[i] = wf[i]*decay - stepSize*mi/denom
		}
	})
	return nil
}
