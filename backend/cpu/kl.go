package cpu

import (
	"fmt"
	"math"

	"github.com/minitron/minitron/backend"
	"github.com/minitron/minitron/backend/cpu/vec"
)

// logSoftmax writes log(softmax(x/temp)) into out (float64 accumulation of
// the normalizer); out may alias x.
func logSoftmax(out, x []float32, temp float32) {
	inv := 1 / temp
	mx := vec.Max(x) * inv
	var s float64
	// Exponentiate a block at a time into a buffer: no second row of scratch.
	var buf [1024]float32
	for j := 0; j < len(x); j += len(buf) {
		blk := x[j:min(j+len(buf), len(x))]
		s += vec.ExpSum(buf[:len(blk)], blk, inv, mx)
	}
	c := mx + float32(math.Log(s))
	for j, v := range x {
		out[j] = v*inv - c
	}
}

func klCheck(p backend.KL) error {
	if !(p.Temperature > 0) {
		return fmt.Errorf("cpu: KL: temperature %v must be positive", p.Temperature)
	}
	return nil
}

// KLDiv compares student and teacher logits row by row.
func (b *Backend) KLDiv(losses, dstudent, student, teacher backend.Tensor, p backend.KL) error {
	const op = "KLDiv"
	if err := klCheck(p); err != nil {
		return err
	}
	n, v := backend.Rows(student), backend.Cols(student)
	fs, err := mats(op, backend.Need("student", student, n, v), backend.Need("teacher", teacher, n, v),
		backend.Need("losses", losses, n, 1), backend.Maybe("dstudent", dstudent, n, v))
	if err != nil {
		return err
	}
	sf, tf, lf, df := fs[0], fs[1], fs[2], fs[3]
	b.parallelRows(n, 8*v, func(lo, hi int) {
		ea := make([]float32, v)
		eb := make([]float32, v)
		for i := lo; i < hi; i++ {
			var d, ns, nt []float32
			if df != nil {
				d = df[i*v : (i+1)*v]
			}
			if i+1 < hi {
				ns, nt = sf[(i+1)*v:(i+2)*v], tf[(i+1)*v:(i+2)*v]
			}
			lf[i] = klRow(d, sf[i*v:(i+1)*v], tf[i*v:(i+1)*v], ea, eb, ns, nt, p)
		}
	})
	return nil
}

// klRow returns T²·KL between the softmaxes at temperature T of one row of
// student logits s and teacher logits t, and writes p.Scale × its gradient
// with respect to s into d unless d is nil (d may alias s). ea and eb are
// scratch rows; ns and nt, the rows of logits read next (or nil), are
// brought into cache while this row's exponentials are computed.
//
// With a = s/T, b = t/T, their maxima ma, mb, ea = e^(a−ma), eb = e^(b−mb)
// and their sums za, zb: q = ea/za, p = eb/zb and
//
//	KL(p‖q) = Σ p·(b−a) + (ma−mb) + log za − log zb
//	KL(q‖p) = Σ q·(a−b) + (mb−ma) + log zb − log za
//
// and the gradients of T²·KL are T·(q−p) and T·q·((a−b) − Σ q·(a−b)):
// each element costs two exponentials.
func klRow(d, s, t, ea, eb, ns, nt []float32, p backend.KL) float32 {
	T := p.Temperature
	it := 1 / T
	ma, mb := vec.Max(s)*it, vec.Max(t)*it
	za := vec.ExpSumFetch(ea, s, it, ma, ns)
	zb := vec.ExpSumFetch(eb, t, it, mb, nt)
	logRatio := float64(ma) - float64(mb) + math.Log(za) - math.Log(zb) // (ma−mb) + log za − log zb
	g := float64(p.Scale * T)
	var kl float64
	if !p.Reverse {
		kl = vec.DotDiff(eb, t, s)*float64(it)/zb + logRatio
		if d != nil {
			vec.AXPBY(d, ea, eb, float32(g/za), -float32(g/zb))
		}
	} else {
		sq := vec.DotDiff(ea, s, t) * float64(it) / za // Σ q·(a−b)
		kl = sq - logRatio
		if d != nil {
			ga, sq32 := float32(g/za), float32(sq)
			for j := range d {
				d[j] = ga * ea[j] * ((s[j]-t[j])*it - sq32)
			}
		}
	}
	return float32(float64(T) * float64(T) * kl)
}

// KLTopK compares student logits with a top-k teacher.
func (b *Backend) KLTopK(losses, dstudent, student, ids, logp backend.Tensor, p backend.KL) error {
	const op = "KLTopK"
	if err := klCheck(p); err != nil {
		return err
	}
	if p.Missing != backend.MissingRenormalize && p.Missing != backend.MissingUniform {
		return fmt.Errorf("cpu: KLTopK: missing-mass policy %q: use %s or %s", p.Missing, backend.MissingRenormalize, backend.MissingUniform)
	}
	if p.Reverse && p.Missing == backend.MissingRenormalize {
		return fmt.Errorf("cpu: KLTopK: reverse KL against a renormalized top-k teacher is infinite; use the %s policy", backend.MissingUniform)
	}
	n, v := backend.Rows(student), backend.Cols(student)
	k := backend.Cols(ids)
	idf, err := ints(op, ids)
	if err != nil {
		return err
	}
	if len(idf) != n*k {
		return backend.ShapeError(op, "ids", ids.Shape(), n, k)
	}
	fs, err := mats(op, backend.Need("student", student, n, v), backend.Need("logp", logp, n, k),
		backend.Need("losses", losses, n, 1), backend.Maybe("dstudent", dstudent, n, v))
	if err != nil {
		return err
	}
	sf, pf, lf, df := fs[0], fs[1], fs[2], fs[3]
	for i, id := range idf {
		if id < 0 || int(id) >= v {
			return fmt.Errorf("cpu: KLTopK: teacher token %d at row %d is outside the vocabulary of %d", id, i/k, v)
		}
	}
	if k >= v && p.Missing == backend.MissingUniform {
		return fmt.Errorf("cpu: KLTopK: top-%d of a %d-token vocabulary leaves no token for the uniform policy", k, v)
	}
	T := p.Temperature
	b.parallelRows(n, 6*v, func(lo, hi int) {
		lq := make([]float32, v)
		pt := make([]float32, v) // the teacher's distribution, filled in
		for i := lo; i < hi; i++ {
			logSoftmax(lq, sf[i*v:(i+1)*v], T)
			row, lpr := idf[i*k:(i+1)*k], pf[i*k:(i+1)*k]
			var mass float64
			for _, x := range lpr {
				mass += math.Exp(float64(x))
			}
			var rest float64 // probability of each token outside the top k
			var shift float64
			if p.Missing == backend.MissingUniform {
				rest = math.Max(0, 1-mass) / float64(v-k)
			} else {
				shift = -math.Log(mass) // renormalize: log p̃ = log p - log mass
			}
			for j := range pt {
				pt[j] = float32(rest)
			}
			var kl float64
			if !p.Reverse {
				for j, id := range row {
					lp := float64(lpr[j]) + shift
					pj := math.Exp(lp)
					pt[id] = float32(pj)
					kl += pj * (lp - float64(lq[id]))
				}
				if rest > 0 {
					in := make(map[int32]bool, k)
					for _, id := range row {
						in[id] = true
					}
					lr := math.Log(rest)
					for j := range v {
						if !in[int32(j)] {
							kl += rest * (lr - float64(lq[j]))
						}
					}
				}
			} else {
				lpt := make([]float64, v)
				lr := math.Log(rest)
				for j := range lpt {
					lpt[j] = lr
				}
				for j, id := range row {
					lpt[id] = float64(lpr[j])
					pt[id] = float32(math.Exp(float64(lpr[j])))
				}
				for j := range lq {
					qj := math.Exp(float64(lq[j]))
					kl += qj * (float64(lq[j]) - lpt[j])
				}
				if df != nil {
					d := df[i*v : (i+1)*v]
					g := float64(p.Scale * T)
					for j := range d {
						qj := math.Exp(float64(lq[j]))
						d[j] = float32(g * qj * (float64(lq[j]) - lpt[j] - kl))
					}
				}
				lf[i] = float32(float64(T) * float64(T) * kl)
				continue
			}
			lf[i] = float32(float64(T) * float64(T) * kl)
			if df != nil {
				d := df[i*v : (i+1)*v]
				vec.Exp(lq) // q
				g := p.Scale * T
				for j := range d {
					d[j] = g * (lq[j] - pt[j])
				}
			}
		}
	})
	return nil
}
