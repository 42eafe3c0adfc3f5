package cuda

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCachedCompile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "kernels")
	calls := 0
	compile := func() ([]byte, error) { calls++; return []byte("cubin-bytes"), nil }
	img, hit, err := cachedCompile(dir, "k1", ".cubin", compile)
	if err != nil || hit || string(img) != "cubin-bytes" || calls != 1 {
		t.Fatalf("first: %q %v %v calls=%d", img, hit, err, calls)
	}
	img, hit, err = cachedCompile(dir, "k1", ".cubin", compile)
	if err != nil || !hit || string(img) != "cubin-bytes" || calls != 1 {
		t.Fatalf("second: %q %v %v calls=%d", img, hit, err, calls)
	}
	// No temporary files are left behind.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 || ents[0].Name() != "k1.cubin" {
		t.Fatalf("cache holds %v", ents)
	}
	// Other users can read it.
	if st, err := os.Stat(filepath.Join(dir, "k1.cubin")); err != nil || st.Mode().Perm()&0o044 != 0o044 {
		t.Fatalf("cached image mode %v (%v), want readable by others", st.Mode(), err)
	}
	// A different key compiles again; a failing compile is an error and stores nothing.
	boom := errors.New("boom")
	if _, _, err := cachedCompile(dir, "k2", ".cubin", func() ([]byte, error) { return nil, boom }); !errors.Is(err, boom) {
		t.Fatalf("error %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "k2.cubin")); err == nil {
		t.Fatal("a failed compile was cached")
	}
	// An unwritable cache still returns the image.
	ro := filepath.Join(t.TempDir(), "file")
	os.WriteFile(ro, nil, 0o644)
	if img, _, err := cachedCompile(filepath.Join(ro, "sub"), "k", ".cubin", compile); err != nil || string(img) != "cubin-bytes" {
		t.Fatalf("unwritable cache: %q %v", img, err)
	}
}

func TestCacheKey(t *testing.T) {
	const id = "/usr/lib/libnvrtc.so.13 100 1"
	base := cacheKey("abc", "sm_90", 13000, 13000, id, []string{"-x"})
	for name, k := range map[string]string{
		"source":  cacheKey("abd", "sm_90", 13000, 13000, id, []string{"-x"}),
		"arch":    cacheKey("abc", "sm_80", 13000, 13000, id, []string{"-x"}),
		"driver":  cacheKey("abc", "sm_90", 12080, 13000, id, []string{"-x"}),
		"nvrtc":   cacheKey("abc", "sm_90", 13000, 12080, id, []string{"-x"}),
		"library": cacheKey("abc", "sm_90", 13000, 13000, "/tmp/emu/libnvrtc.so 100 1", []string{"-x"}),
		"options": cacheKey("abc", "sm_90", 13000, 13000, id, []string{"-y"}),
	} {
		if k == base {
			t.Errorf("changing the %s does not change the key", name)
		}
	}
	if base != cacheKey("abc", "sm_90", 13000, 13000, id, []string{"-x"}) {
		t.Error("key is not deterministic")
	}
}

func TestCacheDir(t *testing.T) {
	t.Setenv("MINITRON_CACHE", "/tmp/mc")
	if d, err := CacheDir(); err != nil || d != "/tmp/mc/kernels" {
		t.Fatalf("%q %v", d, err)
	}
}

// Without any cache directory (no $HOME, as in some containers) the
// kernels are compiled all the same, every time, and nothing is written
// to the working directory.
func TestCompileWithoutCacheDir(t *testing.T) {
	t.Setenv("MINITRON_CACHE", "")
	t.Setenv("XDG_CACHE_HOME", "")
	t.Setenv("HOME", "")
	if _, err := CacheDir(); err == nil {
		t.Skip("this system has a user cache directory without $HOME")
	}
	t.Chdir(t.TempDir())
	var logs []string
	for range 2 {
		fc := &fakeCompiler{known: map[string]bool{"sm_90": true}}
		img, err := compileKernels(fc, deviceInfo{Major: 9, Driver: 13000}, 1, "", func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) })
		if err != nil || string(img) != "image for sm_90 by fake" || len(fc.compiled) != 1 {
			t.Fatalf("image %q (%v) after %d compiles", img, err, len(fc.compiled))
		}
	}
	if ents, _ := os.ReadDir("."); len(ents) != 0 {
		t.Errorf("files written to the working directory: %v", ents)
	}
	if len(logs) == 0 || !strings.Contains(logs[0], "compiled at every start") {
		t.Errorf("logs %q", logs)
	}
}
