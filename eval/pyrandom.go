package eval

import "math"

// pyRandom reproduces CPython's random.Random (a Mersenne Twister MT19937
// seeded with init_by_array) for the calls few-shot sampling makes:
// getrandbits, _randbelow and sample. lm-evaluation-harness draws its
// few-shot examples with random.Random(1234).sample(docs, n), so the same
// generator picks the same examples.
type pyRandom struct {
	mt  [624]uint32
	idx int
}

// newPyRandom is random.Random(seed) for a non-negative integer seed.
func newPyRandom(seed uint64) *pyRandom {
	// random.seed(int) feeds the 32-bit words of the seed, least
	// significant first, to init_by_array (one zero word for 0).
	key := []uint32{uint32(seed)}
	if hi := uint32(seed >> 32); hi != 0 {
		key = append(key, hi)
	}
	r := &pyRandom{}
	r.initByArray(key)
	return r
}

func (r *pyRandom) initGenrand(s uint32) {
	r.mt[0] = s
	for i := 1; i < len(r.mt); i++ {
		r.mt[i] = 1812433253*(r.mt[i-1]^(r.mt[i-1]>>30)) + uint32(i)
	}
	r.idx = len(r.mt)
}

func (r *pyRandom) initByArray(key []uint32) {
	const n = 624
	r.initGenrand(19650218)
	i, j := 1, 0
	for k := max(n, len(key)); k > 0; k-- {
		r.mt[i] = (r.mt[i] ^ ((r.mt[i-1] ^ (r.mt[i-1] >> 30)) * 1664525)) + key[j] + uint32(j)
		i++
		j++
		if i >= n {
			r.mt[0] = r.mt[n-1]
			i = 1
		}
		if j >= len(key) {
			j = 0
		}
	}
	for k := n - 1; k > 0; k-- {
		r.mt[i] = (r.mt[i] ^ ((r.mt[i-1] ^ (r.mt[i-1] >> 30)) * 1566083941)) - uint32(i)
		i++
		if i >= n {
			r.mt[0] = r.mt[n-1]
			i = 1
		}
	}
	r.mt[0] = 0x80000000
}

// uint32 is genrand_uint32.
func (r *pyRandom) uint32() uint32 {
	const n, m = 624, 397
	if r.idx >= n {
		for k := range n {
			y := r.mt[k]&0x80000000 | r.mt[(k+1)%n]&0x7fffffff
			v := r.mt[(k+m)%n] ^ y>>1
			if y&1 != 0 {
				v ^= 0x9908b0df
			}
			r.mt[k] = v
		}
		r.idx = 0
	}
	y := r.mt[r.idx]
	r.idx++
	y ^= y >> 11
	y ^= y << 7 & 0x9d2c5680
	y ^= y << 15 & 0xefc60000
	y ^= y >> 18
	return y
}

// getrandbits returns k random bits (0 <= k <= 64), 32-bit words filled
// least significant first as CPython does.
func (r *pyRandom) getrandbits(k int) uint64 {
	if k <= 32 {
		if k == 0 {
			return 0
		}
		return uint64(r.uint32() >> (32 - k))
	}
	lo := uint64(r.uint32())
	hi := uint64(r.uint32() >> (64 - k))
	return hi<<32 | lo
}

// randbelow is _randbelow_with_getrandbits: a uniform int in [0, n), n > 0,
// by rejection on n.bit_length() bits.
func (r *pyRandom) randbelow(n int) int {
	k := 0
	for v := uint64(n); v > 0; v >>= 1 {
		k++
	}
	x := r.getrandbits(k)
	for x >= uint64(n) {
		x = r.getrandbits(k)
	}
	return int(x)
}

// sample is random.sample(range(n), k): k distinct indices in [0, n) in
// the order CPython draws them (a pool for small n, a set otherwise).
func (r *pyRandom) sample(n, k int) []int {
	if k < 0 || k > n {
		panic("eval: sample larger than population or negative")
	}
	out := make([]int, k)
	setsize := 21
	if k > 5 {
		setsize += int(math.Pow(4, math.Ceil(math.Log(float64(k*3))/math.Log(4))))
	}
	if n <= setsize {
		pool := make([]int, n)
		for i := range pool {
			pool[i] = i
		}
		for i := range k {
			j := r.randbelow(n - i)
			out[i] = pool[j]
			pool[j] = pool[n-i-1]
		}
		return out
	}
	selected := make(map[int]bool, k)
	for i := range k {
		j := r.randbelow(n)
		for selected[j] {
			j = r.randbelow(n)
		}
		selected[j] = true
		out[i] = j
	}
	return out
}
