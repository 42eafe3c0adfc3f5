package tokenizer

import (
	"encoding/binary"
	"fmt"
)

// dartsTrie reads the double-array trie format of darts-clone, in which
// SentencePiece stores the normalization rules of a model (the
// precompiled_charsmap).
type dartsTrie struct {
	units []uint32
}

func newDarts(blob []byte) (*dartsTrie, error) {
	if len(blob)%4 != 0 || len(blob) == 0 {
		return nil, fmt.Errorf("double-array trie of %d bytes is not a whole number of units", len(blob))
	}
	u := make([]uint32, len(blob)/4)
	for i := range u {
		u[i] = binary.LittleEndian.Uint32(blob[4*i:])
	}
	return &dartsTrie{units: u}, nil
}

func unitOffset(u uint32) uint32 { return (u >> 10) << ((u & (1 << 9)) >> 6) }
func unitLabel(u uint32) uint32  { return u & ((1 << 31) | 0xff) }
func unitValue(u uint32) uint32  { return u & ((1 << 31) - 1) }
func unitHasLeaf(u uint32) bool  { return (u>>8)&1 == 1 }

// longestPrefix returns the value and length of the longest key that is a
// prefix of s (length 0 if none).
func (d *dartsTrie) longestPrefix(s string) (value, length int) {
	n := len(d.units)
	pos := unitOffset(d.units[0])
	for i := 0; i < len(s); i++ {
		pos ^= uint32(s[i])
		if int(pos) >= n {
			return
		}
		u := d.units[pos]
		if unitLabel(u) != uint32(s[i]) {
			return
		}
		pos ^= unitOffset(u)
		if int(pos) >= n {
			return
		}
		if unitHasLeaf(u) {
			value, length = int(unitValue(d.units[pos])), i+1
		}
	}
	return
}

// startsKey reports whether some key begins with the byte c.
func (d *dartsTrie) startsKey(c byte) bool {
	pos := unitOffset(d.units[0]) ^ uint32(c)
	return int(pos) < len(d.units) && unitLabel(d.units[pos]) == uint32(c)
}
