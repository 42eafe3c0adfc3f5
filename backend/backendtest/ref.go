package backendtest

import (
	"math"

	"github.com/minitron/minitron/backend"
)

// Float64 reference implementations of every op. They are written for
// clarity, straight from the definitions, and share no code with backends.

func refMatMul(a, b []float64, m, n, k int, transA, transB bool) []float64 {
	c := make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s float64
			for p := range k {
				av := a[i*k+p]
				if transA {
					av = a[p*m+i]
				}
				bv := b[p*n+j]
				if transB {
					bv = b[j*k+p]
				}
				s += av * bv
			}
			c[i*n+j] = s
		}
	}
	return c
}

func refLayerNorm(x, w, bias []float64, d int, eps, off float64) []float64 {
	out := make([]float64, len(x))
	for i := 0; i < len(x); i += d {
		row := x[i : i+d]
		var mean, v float64
		for _, e := range row {
			mean += e
		}
		mean /= float64(d)
		for _, e := range row {
			v += (e - mean) * (e - mean)
		}
		v /= float64(d)
		for j, e := range row {
			y := (e - mean) / math.Sqrt(v+eps) * (w[j] + off)
			if bias != nil {
				y += bias[j]
			}
			out[i+j] = y
		}
	}
	return out
}

func refRMSNorm(x, w []float64, d int, eps float64) []float64 {
	out := make([]float64, len(x))
	for i := 0; i < len(x); i += d {
		var ms float64
		for _, e := range x[i : i+d] {
			ms += e * e
		}
		ms /= float64(d)
		for j, e := range x[i : i+d] {
			out[i+j] = e / math.Sqrt(ms+eps) * w[j]
		}
	}
	return out
}

func refRoPE(x []float64, pos []int32, width int, r backend.RoPE, inverse bool) []float64 {
	out := append([]float64(nil), x...)
	half := r.RotDim / 2
	for i, p := range pos {
		for h := 0; h < width; h += r.HeadDim {
			for j := range half {
				ang := float64(p) * float64(r.InvFreq[j])
				if inverse {
					ang = -ang
				}
				a, b := x[i*width+h+j], x[i*width+h+j+half]
				out[i*width+h+j] = a*math.Cos(ang) - b*math.Sin(ang)
				out[i*width+h+j+half] = b*math.Cos(ang) + a*math.Sin(ang)
			}
		}
	}
	return out
}

// refAttention returns the output and the log-sum-exp of every softmax row.
func refAttention(q, k, v []float64, a backend.Attn) (out, lse []float64) {
	hd := a.HeadDim
	wq, wk := a.Heads*hd, a.KVHeads*hd
	out = make([]float64, a.B*a.T*wq)
	lse = make([]float64, a.B*a.T*a.Heads)
	for s := range a.B {
		past := a.PastOf(s)
		for h := range a.Heads {
			kvh := h / (a.Heads / a.KVHeads)
			for i := range a.T {
				qrow := q[(s*a.T+i)*wq+h*hd:][:hd]
				n := past + i + 1
				sc := make([]float64, n)
				mx := math.Inf(-1)
				for j := range n {
					krow := k[(a.Slot(s)*a.KVRows+j)*wk+kvh*hd:][:hd]
					var d float64
					for c := range hd {
						d += qrow[c] * krow[c]
					}
					sc[j] = d * float64(a.Scale)
					mx = math.Max(mx, sc[j])
				}
				var sum float64
				for _, x := range sc {
					sum += math.Exp(x - mx)
				}
				l := mx + math.Log(sum)
				lse[(s*a.T+i)*a.Heads+h] = l
				orow := out[(s*a.T+i)*wq+h*hd:][:hd]
				for j := range n {
					p := math.Exp(sc[j] - l)
					vrow := v[(a.Slot(s)*a.KVRows+j)*wk+kvh*hd:][:hd]
					for c := range hd {
						orow[c] += p * vrow[c]
					}
				}
			}
		}
	}
	return out, lse
}

// refCosine returns 1 − cos(u_r, v_r) for each row.
func refCosine(u, v []float64, d int) []float64 {
	out := make([]float64, len(u)/d)
	for r := range out {
		var uv, uu, vv float64
		for j := range d {
			a, b := u[r*d+j], v[r*d+j]
			uv += a * b
			uu += a * a
			vv += b * b
		}
		out[r] = 1 - uv/(math.Max(math.Sqrt(uu), 1e-8)*math.Max(math.Sqrt(vv), 1e-8))
	}
	return out
}

func refCrossEntropy(logits []float64, targets []int32, v int) []float64 {
	out := make([]float64, len(targets))
	for i, t := range targets {
		if t < 0 {
			continue
		}
		row := logits[i*v : (i+1)*v]
		mx := math.Inf(-1)
		for _, x := range row {
			mx = math.Max(mx, x)
		}
		var s float64
		for _, x := range row {
			s += math.Exp(x - mx)
		}
		out[i] = mx + math.Log(s) - row[t]
	}
	return out
}

// numGrad returns d(sum(dout·f(x)))/dx by central differences in float64.
func numGrad(f func(x []float64) []float64, x, dout []float64) []float64 {
	g := make([]float64, len(x))
	xx := append([]float64(nil), x...)
	for i := range x {
		h := 1e-6 * math.Max(1, math.Abs(x[i]))
		xx[i] = x[i] + h
		up := f(xx)
		xx[i] = x[i] - h
		down := f(xx)
		xx[i] = x[i]
		var s float64
		for j := range up {
			s += dout[j] * (up[j] - down[j])
		}
		g[i] = s / (2 * h)
	}
	return g
}

func refLogSoftmax(x []float64, T float64) []float64 {
	out := make([]float64, len(x))
	mx := math.Inf(-1)
	for _, v := range x {
		mx = math.Max(mx, v/T)
	}
	var s float64
	for _, v := range x {
		s += math.Exp(v/T - mx)
	}
	for j, v := range x {
		out[j] = v/T - mx - math.Log(s)
	}
	return out
}

// refKL returns T²·KL between per-row distributions given as log-probs.
func refKL(lp, lq []float64, T float64, reverse bool) float64 {
	var kl float64
	for j := range lp {
		if reverse {
			kl += math.Exp(lq[j]) * (lq[j] - lp[j])
		} else if !math.IsInf(lp[j], -1) {
			kl += math.Exp(lp[j]) * (lp[j] - lq[j])
		}
	}
	return T * T * kl
}

// refTopKTeacher expands a top-k teacher into a full log distribution.
func refTopKTeacher(ids []int32, logp []float64, v int, missing string) []float64 {
	out := make([]float64, v)
	var mass float64
	for _, l := range logp {
		mass += math.Exp(l)
	}
	rest := math.Inf(-1)
	if missing == backend.MissingUniform {
		rest = math.Log((1 - mass) / float64(v-len(ids)))
	}
	for j := range out {
		out[j] = rest
	}
	for j, id := range ids {
		if missing == backend.MissingUniform {
			out[id] = logp[j]
		} else {
			out[id] = logp[j] - math.Log(mass)
		}
	}
	return out
}
