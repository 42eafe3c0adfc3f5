package eval

import (
	"fmt"
	"testing"
)

// The expected values were printed by CPython 3.11.7:
//
//	r = random.Random(1234)
//	[r.getrandbits(32) for _ in range(5)]
//	r = random.Random(1234)
//	r.sample(range(40398), 6); r.sample(range(39905), 11); r.sample(range(1119), 25)
//	r.sample(range(10), 5); r.sample(range(30), 7)
//	[r._randbelow(1) for _ in range(3)], [r._randbelow(2**31) for _ in range(2)], r.getrandbits(40), r.getrandbits(64)
//	random.Random(2**40 + 7).getrandbits(32)
//
// (40398, 39905 and 1119 are the sizes of the Winogrande, HellaSwag and
// ARC-Challenge training splits, and 6, 11 and 25 the draws of their
// few-shot settings.)
func TestPyRandom(t *testing.T) {
	r := newPyRandom(1234)
	var words []uint64
	for range 5 {
		words = append(words, r.getrandbits(32))
	}
	check := func(name string, got any, want string) {
		t.Helper()
		if s := fmt.Sprint(got); s != want {
			t.Errorf("%s: %s, want %s", name, s, want)
		}
	}
	check("getrandbits(32)", words, "[4150886329 3342196574 1892932127 501869158 32175636]")
	r = newPyRandom(1234)
	check("sample(40398, 6)", r.sample(40398, 6), "[28883 7657 490 5940 38156 2288]")
	check("sample(39905, 11)", r.sample(39905, 11), "[5500 6450 23241 15519 1142 2019 1038 22681 31735 30379 9735]")
	check("sample(1119, 25)", r.sample(1119, 25), "[186 374 234 29 1030 996 511 132 1108 954 140 182 1054 94 552 129 619 985 727 545 510 409 928 1085 39]")
	check("sample(10, 5)", r.sample(10, 5), "[8 1 0 2 9]")
	check("sample(30, 7)", r.sample(30, 7), "[22 15 21 12 5 1 2]")
	check("randbelow(1)", []int{r.randbelow(1), r.randbelow(1), r.randbelow(1)}, "[0 0 0]")
	check("randbelow(2**31)", []int{r.randbelow(1 << 31), r.randbelow(1 << 31)}, "[923823392 619530673]")
	check("getrandbits(40)", r.getrandbits(40), "1026613700465")
	check("getrandbits(64)", r.getrandbits(64), "14222070232597566932")
	check("Random(2**40+7)", newPyRandom(1<<40+7).getrandbits(32), "2635837658")
}
