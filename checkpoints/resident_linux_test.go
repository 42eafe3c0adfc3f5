package checkpoints

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// ResidentFraction sees a file's pages in the page cache after it is read
// and gone after they are dropped.
func TestResidentFraction(t *testing.T) {
	dir := t.TempDir()
	patterned(t, dir, 256, 4096) // 1 MB
	path := filepath.Join(dir, "model.safetensors")
	if _, err := os.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	ts, err := Open(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	if r := ts.ResidentFraction(); r < 0.9 {
		t.Fatalf("just read: resident %.2f, want ~1", r)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Skip("cannot drop pages here:", err)
	}
	r := ts.ResidentFraction()
	if r > 0.1 {
		// Some file systems (tmpfs) keep their pages: nothing to learn.
		t.Skipf("pages not dropped by this file system (resident %.2f)", r)
	}
	t.Logf("after dropping: resident %.2f", r)
}
