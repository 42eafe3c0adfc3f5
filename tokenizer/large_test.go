package tokenizer

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"
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

// syntheticModel builds a SentencePiece model of n pieces shaped like a
// trained BPE vocabulary: bytes, then pieces made by merging two earlier ones.
func syntheticModel(n, modelType int) []byte {
	r := rand.New(rand.NewPCG(1, 1))
	var pieces []string
	seen := map[string]bool{}
	add := func(p string) {
		if !seen[p] {
			seen[p] = true
			pieces = append(pieces, p)
		}
	}
	for c := 'a'; c <= 'z'; c++ {
		add(string(c))
		add(spaceSymbol + string(c))
	}
	for len(pieces) < n-259 {
		a, b := pieces[r.IntN(len(pieces))], pieces[r.IntN(len(pieces))]
		if len(a)+len(b) <= 24 && b[0] != 0xe2 {
			add(a + b)
		}
	}
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
		piece(p, -float32(i), typeNormal)
	}
	var ts protoWriter
	ts.varint(3, uint64(modelType))
	ts.varint(35, 1)
	w.bytes(2, ts.b)
	return w.b
}

// TestLargeModelLoad: a 256k-piece model loads in under a second and
// under 200 MB.
func TestLargeModelLoad(t *testing.T) {
	for _, typ := range []int{modelBPE, modelUnigram} {
		b := syntheticModel(256000, typ)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		start := time.Now()
		sp, err := ParseSentencePiece(b)
		took := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		runtime.GC()
		runtime.ReadMemStats(&after)
		mem := int64(after.HeapAlloc) - int64(before.HeapAlloc)
		t.Logf("model type %d: %d pieces, %d-byte file, loaded in %v, %d MB", typ, sp.VocabSize(), len(b), took, mem>>20)
		if sp.VocabSize() != 256000 {
			t.Fatalf("%d pieces", sp.VocabSize())
		}
		// Allow for a slow CI machine: the limit is a second on ours.
		if took > 3*time.Second || mem > 200<<20 {
			t.Fatalf("load took %v and %d MB", took, mem>>20)
		}
		if ids := sp.Encode("hello world"); len(ids) == 0 || sp.Decode(ids) != "hello world" {
			t.Fatalf("round trip: %v %q", ids, sp.Decode(ids))
		}
		runtime.KeepAlive(sp)
	}
}
