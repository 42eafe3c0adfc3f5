package diskio

import (
	"bytes"
	"errors"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"testing"
)

// Files written in pieces of every size through the write-back path, then
// on with direct writes (switching at an unaligned offset, ending with an
// unaligned tail), have exactly the bytes written.
func TestStreamWriter(t *testing.T) {
	defer func(c, a int64, b int) { writebackChunk, directAfter, directBuffer = c, a, b }(writebackChunk, directAfter, directBuffer)
	writebackChunk, directAfter, directBuffer = 4096, 10000, 16384
	rng := rand.New(rand.NewSource(9))
	before := directWrites.Load()
	for _, size := range []int{0, 5000, 10001, 1<<20 + 123, 3 * 16384} {
		want := make([]byte, size)
		rng.Read(want)
		path := filepath.Join(t.TempDir(), "f")
		err := WriteAtomic(path, func(w io.Writer) error {
			for rest := want; len(rest) > 0; {
				n := min(len(rest), 1+rng.Intn(40000))
				if _, err := w.Write(rest[:n]); err != nil {
					return err
				}
				rest = rest[n:]
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(path)
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%d bytes written: read back %d (%v), not the same", size, len(got), err)
		}
	}
	// Where this file system takes direct writes, they were used.
	probe := filepath.Join(t.TempDir(), "probe")
	os.WriteFile(probe, nil, 0o644)
	if f, err := openDirectWrite(probe); err == nil {
		_, err := f.WriteAt(AlignedBuffer(Align)[:Align], 0)
		f.Close()
		if err == nil && directWrites.Load() == before {
			t.Fatal("the file system takes direct writes, but none were made")
		}
	}
	t.Logf("%d direct writes", directWrites.Load()-before)
}

// A write error from the direct writer reaches the producer and leaves no
// file behind.
func TestStreamWriterError(t *testing.T) {
	defer func(a int64, b int) { directAfter, directBuffer = a, b }(directAfter, directBuffer)
	directAfter, directBuffer = 4096, 16384
	path := filepath.Join(t.TempDir(), "f")
	boom := errors.New("boom")
	err := WriteAtomic(path, func(w io.Writer) error {
		if _, err := w.Write(make([]byte, 100000)); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatalf("error %v, want the producer's", err)
	}
	if left, _ := os.ReadDir(filepath.Dir(path)); len(left) > 0 {
		t.Fatalf("left %v behind", left)
	}
}
