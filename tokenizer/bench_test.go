package tokenizer

import (
	"bufio"
	"os"
	"path/filepath"
	"testing"

	"github.com/minitron/minitron/internal/fixture"
)

// goSourceLines returns lines of Go source from GOROOT, a real corpus every
// machine with Go has.
func goSourceLines(tb testing.TB, maxBytes int) []string {
	tb.Helper()
	var lines []string
	total := 0
	root := fixture.GoSource(tb)
	filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil || total >= maxBytes {
			return filepath.SkipDir
		}
		if d.IsDir() || filepath.Ext(p) != ".go" {
			return nil
		}
		f, err := os.Open(p)
		if err != nil {
			return nil
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if l := sc.Text(); l != "" {
				lines = append(lines, l)
				total += len(l) + 1
			}
		}
		return nil
	})
	if total == 0 {
		tb.Skip("no Go source found under GOROOT")
	}
	return lines
}

func benchEncode(b *testing.B, name string) {
	sp, _ := loadGolden(b, name)
	lines := goSourceLines(b, 4<<20)
	n := 0
	for _, l := range lines {
		n += len(l) + 1
	}
	encodeAll(b, sp, lines, n)
}

// encodeAll times encoding each of docs, n bytes in all.
func encodeAll(b *testing.B, sp *SentencePiece, docs []string, n int) {
	b.SetBytes(int64(n))
	b.ResetTimer()
	var ids []int32
	for range b.N {
		for _, d := range docs {
			ids = sp.AppendEncode(ids[:0], d)
		}
	}
}

func BenchmarkEncodeBPE(b *testing.B)     { benchEncode(b, "spm-nemotron-style") }
func BenchmarkEncodeUnigram(b *testing.B) { benchEncode(b, "spm-unigram") }

// goSourceFiles returns whole Go files from GOROOT, up to maxBytes: the
// documents the default recipe's data stage encodes.
func goSourceFiles(tb testing.TB, maxBytes int) []string {
	tb.Helper()
	var files []string
	total := 0
	filepath.WalkDir(fixture.GoSource(tb), func(p string, d os.DirEntry, err error) error {
		if err != nil || total >= maxBytes {
			return filepath.SkipDir
		}
		if d.IsDir() || filepath.Ext(p) != ".go" {
			return nil
		}
		if b, err := os.ReadFile(p); err == nil && len(b) > 0 {
			files = append(files, string(b))
			total += len(b)
		}
		return nil
	})
	if total == 0 {
		tb.Skip("no Go source found under GOROOT")
	}
	return files
}

// tinyTeacherTokenizer is the tokenizer of the default recipe's teacher.
const tinyTeacherTokenizer = "../models/tiny-teacher/tokenizer.model"

// BenchmarkEncodeGoFiles encodes whole Go files with the default recipe's
// tokenizer, as the data stage does: "fresh" merges every run afresh (the
// anchor), "cached" splits words and takes repeated runs from the cache.
func BenchmarkEncodeGoFiles(b *testing.B) {
	files := goSourceFiles(b, 4<<20)
	n := 0
	for _, f := range files {
		n += len(f)
	}
	for _, cached := range []bool{false, true} {
		name := "fresh"
		if cached {
			name = "cached"
		}
		b.Run(name, func(b *testing.B) {
			sp, err := LoadSentencePiece(tinyTeacherTokenizer)
			if err != nil {
				b.Fatal(err)
			}
			if !cached {
				sp.wordCut, sp.noRunCache = false, true
			}
			encodeAll(b, sp, files, n)
		})
	}
}
