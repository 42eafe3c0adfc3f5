package tokenizer

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
)

// protoWriter encodes the few ModelProto fields the large-model test needs.
type protoWriter struct{ b []byte }

func (w *protoWriter) tag(field, wire int) { w.b = binary.AppendUvarint(w.b, uint64(field<<3|wire)) }
func (w *protoWriter) bytes(field int, v []byte) {
	w.tag(field, 2)
	w.b = binary.AppendUvarint(w.b, uint64(len(v)))
	w.b = append(w.b, v...)
}
func (w *protoWriter) varint(field int, v uint64) {
	w.tag(field, 0)
	w.b = binary.AppendUvarint(w.b, v)
}
func (w *protoWriter) float(field int, v float32) {
	w.tag(field, 5)
	w.b = binary.LittleEndian.AppendUint32(w.b, math.Float32bits(v))
}

// syntheticPieces returns n pieces shaped like a trained BPE vocabulary:
// letters, then pieces made by joining two earlier ones of up to 12 bytes.
func syntheticPieces(n int) []string {
	r := rand.New(rand.NewPCG(1, 1))
	var pieces, short []string
	seen := map[string]bool{}
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			pieces = append(pieces, p)
			if len(p) <= 12 {
				short = append(short, p)
			}
		}
	}
	for c := 'a'; c <= 'z'; c++ {
		add(string(c))
		add(spaceSymbol + string(c))
	}
	for len(pieces) < n {
		a, b := short[r.IntN(len(short))], short[r.IntN(len(short))]
		if b[0] != 0xe2 {
			add(a + b)
		}
	}
	return pieces
}

// syntheticModel builds a SentencePiece model of the pieces plus the
// special and byte pieces (259 more).
func syntheticModel(pieces []string, modelType int) []byte {
	return syntheticModelTyped(pieces, nil, modelType)
}

// syntheticModelTyped is syntheticModel with the types of some pieces
// given (the others are normal).
func syntheticModelTyped(pieces []string, types map[string]int, modelType int) []byte {
	var w protoWriter
	piece := func(s string, score float32, typ int) {
		var p protoWriter
		p.bytes(1, []byte(s))
		p.float(2, score)
		p.varint(3, uint64(typ))
		w.bytes(1, p.b)
	}
	piece("<unk>", 0, typeUnknown)
	piece("<s>", 0, typeControl)
	piece("</s>", 0, typeControl)
	for i := range 256 {
		piece(fmt.Sprintf("<0x%02X>", i), 0, typeByte)
	}
	for i, p := range pieces {
		typ, ok := types[p]
		if !ok {
			typ = typeNormal
		}
		piece(p, -float32(i), typ)
	}
	var ts protoWriter
	ts.varint(3, uint64(modelType))
	ts.varint(35, 1)
	w.bytes(2, ts.b)
	return w.b
}

// TestLargeModelLoad: a 256k-piece model loads into under 200 MB, with a
// bounded number and size of allocations per piece (the load time itself is
// BenchmarkLoadLarge's: a wall-clock limit fails on a loaded machine).
func TestLargeModelLoad(t *testing.T) {
	pieces := syntheticPieces(256000 - 259)
	for _, typ := range []int{modelBPE, modelUnigram} {
		b := syntheticModel(pieces, typ)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		sp, err := ParseSentencePiece(b)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		mem := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		allocs, bytes := after.Mallocs-before.Mallocs, after.TotalAlloc-before.TotalAlloc
		t.Logf("model type %d: %d pieces, %d-byte file: %d MB held, %d allocations of %d MB", typ, sp.VocabSize(), len(b), mem>>20, allocs, bytes>>20)
		if sp.VocabSize() != 256000 {
			t.Fatalf("%d pieces", sp.VocabSize())
		}
		// Measured: 1.0 (BPE) and 1.2 (unigram) allocations and 0.4 and
		// 1.3 kB per piece; the limits leave room for the runtime's map
		// growth policy.
		if mem > 200<<20 || allocs > 3*256000 || bytes > 3*1024*256000 {
			t.Fatalf("load holds %d MB after %d allocations of %d MB", mem>>20, allocs, bytes>>20)
		}
		if ids := sp.Encode("hello world"); len(ids) == 0 || sp.Decode(ids) != "hello world" {
			t.Fatalf("round trip: %v %q", ids, sp.Decode(ids))
		}
		runtime.KeepAlive(sp)
	}
}

// BenchmarkLoadLarge loads a 256k-piece BPE model (Nemotron's vocabulary
// size).
func BenchmarkLoadLarge(b *testing.B) {
	m := syntheticModel(syntheticPieces(256000-259), modelBPE)
	b.SetBytes(int64(len(m)))
	for b.Loop() {
		if _, err := ParseSentencePiece(m); err != nil {
			b.Fatal(err)
		}
	}
}
