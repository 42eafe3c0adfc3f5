package diskio

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeFiles is a WriteDir fill that writes name=content pairs.
func writeFiles(kv ...string) func(string) error {
	return func(tmp string) error {
		for i := 0; i < len(kv); i += 2 {
			if err := WriteFileAtomic(filepath.Join(tmp, kv[i]), []byte(kv[i+1])); err != nil {
				return err
			}
		}
		return nil
	}
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestWriteDir: a directory appears whole, readable by others, replaces
// an old one only when asked, and a failed fill leaves nothing.
func TestWriteDir(t *testing.T) {
	root := t.TempDir()
	out := filepath.Join(root, "a", "model")
	if err := WriteDir(out, false, writeFiles("config.json", "1")); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{out, filepath.Join(out, "config.json")} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		want := os.FileMode(0o644)
		if st.IsDir() {
			want = 0o755
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, st.Mode().Perm(), want)
		}
	}
	// Not replaced without replace; replaced with it.
	err := WriteDir(out, false, writeFiles("config.json", "2"))
	if !errors.Is(err, ErrExist) || !strings.Contains(err.Error(), out) {
		t.Fatalf("writing over %s: %v", out, err)
	}
	if err := WriteDir(out, true, writeFiles("config.json", "3")); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, filepath.Join(out, "config.json")); got != "3" {
		t.Fatalf("replaced content %q", got)
	}
	// An empty directory in the way is taken.
	empty := filepath.Join(root, "empty")
	os.Mkdir(empty, 0o755)
	if err := WriteDir(empty, false, writeFiles("x", "y")); err != nil || readFile(t, filepath.Join(empty, "x")) != "y" {
		t.Fatalf("into an empty directory: %v", err)
	}
	// A failure leaves the old directory as it was and nothing else.
	boom := errors.New("boom")
	err = WriteDir(out, true, func(tmp string) error {
		writeFiles("config.json", "4")(tmp)
		return boom
	})
	if !errors.Is(err, boom) || readFile(t, filepath.Join(out, "config.json")) != "3" {
		t.Fatalf("failed fill: %v", err)
	}
	if left, _ := filepath.Glob(filepath.Join(root, "a", ".*")); len(left) > 0 {
		t.Fatalf("left %v", left)
	}
}

// TestCleanTemporary: leftovers of interrupted writes go, and a directory
// that was being replaced comes back.
func TestCleanTemporary(t *testing.T) {
	dir := t.TempDir()
	for _, d := range []string{".ckpt.tmp-123", "gone.old", "kept", "kept.old"} {
		os.Mkdir(filepath.Join(dir, d), 0o755)
	}
	os.WriteFile(filepath.Join(dir, ".f.tmp-9"), nil, 0o644)
	os.WriteFile(filepath.Join(dir, "gone.old", "x"), []byte("old"), 0o644)
	CleanTemporary(dir)
	var names []string
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if strings.Join(names, ",") != "gone,kept" || readFile(t, filepath.Join(dir, "gone", "x")) != "old" {
		t.Fatalf("after cleaning: %v", names)
	}
}
