package tokenizer

// pairTable maps a pair of piece ids to the id of their concatenation, with
// open addressing; it is read-only after construction.
type pairTable struct {
	keys  []uint64 // 0 marks an empty slot; stored keys are key+1
	vals  []int32
	shift uint
}

// newPairTable builds the table from distinct keys and their values.
func newPairTable(keys []uint64, vals []int32) *pairTable {
	size := 16
	for size < 2*len(keys) {
		size *= 2
	}
	t := &pairTable{keys: make([]uint64, size), vals: make([]int32, size), shift: 64}
	for s := size; s > 1; s >>= 1 {
		t.shift--
	}
	for j, k := range keys {
		v := vals[j]
		i := t.slot(k)
		for t.keys[i] != 0 {
			i = (i + 1) & (len(t.keys) - 1)
		}
		t.keys[i], t.vals[i] = k+1, v
	}
	return t
}

func (t *pairTable) slot(k uint64) int { return int((k * 0x9E3779B97F4A7C15) >> t.shift) }

func (t *pairTable) get(l, r int32) (int32, bool) {
	k := uint64(l)<<32 | uint64(uint32(r))
	for i := t.slot(k); ; i = (i + 1) & (len(t.keys) - 1) {
		switch t.keys[i] {
		case k + 1:
			return t.vals[i], true
		case 0:
			return -1, false
		}
	}
}
