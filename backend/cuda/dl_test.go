package cuda

import (
	"strings"
	"testing"
	"unsafe"
)

// The binding machinery is the same for libc as for libcuda, so it is
// tested here on a machine without a GPU.
func TestBindAndCallLibc(t *testing.T) {
	l, err := openLibrary("the C library", "libc.so.6")
	if err != nil {
		t.Skipf("no libc.so.6 to test against: %v", err)
	}
	var strlen, labs proc
	if err := l.bind(map[string]*proc{"strlen": &strlen, "labs": &labs}); err != nil {
		t.Fatal(err)
	}
	s := []byte("minitron\x00")
	if n := strlen.call(uintptr(unsafe.Pointer(&s[0]))); n != 8 {
		t.Fatalf("strlen = %d, want 8", n)
	}
	neg := -42
	if r := labs.call(uintptr(neg)); int(r) != 42 {
		t.Fatalf("labs(-42) = %d", int(r))
	}
	var first proc
	if err := l.bindFirst(&first, "cuNoSuchCall_v2", "strlen"); err != nil || first.name != "strlen" {
		t.Fatalf("bindFirst: %v %q", err, first.name)
	}
	if err := l.bindFirst(&first, "cuNoSuchCall_v2", "cuNoSuchCall"); err == nil || !strings.Contains(err.Error(), "cuNoSuchCall_v2, cuNoSuchCall") {
		t.Fatalf("bindFirst of missing symbols: %v", err)
	}
	var a, b proc
	err = l.bind(map[string]*proc{"strlen": &a, "cuNoSuchCall_v9": &b, "cuAlsoMissing": &b})
	if err == nil || !strings.Contains(err.Error(), "cuAlsoMissing, cuNoSuchCall_v9") || !strings.Contains(err.Error(), "libc.so.6") {
		t.Fatalf("missing symbols: %v", err)
	}
}

func TestOpenLibraryError(t *testing.T) {
	_, err := openLibrary("cuBLAS", "/nonexistent/libcublas.so.13")
	if err == nil || !strings.Contains(err.Error(), "cuBLAS") || !strings.Contains(err.Error(), "/nonexistent/libcublas.so.13") {
		t.Fatalf("error %v should name the library and path", err)
	}
}
