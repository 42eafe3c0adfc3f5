package cuda

import (
	"fmt"
	"sort"
	"strings"

	"github.com/ebitengine/purego"
)

// library is a shared library opened with dlopen.
type library struct {
	what, path string
	handle     uintptr
}

// openLibrary dlopens path (locally); what names the library in errors
// ("cuBLAS"). A bare file name is resolved by the system loader, and the
// library's path is then the file it found.
func openLibrary(what, path string) (*library, error) {
	h, err := dlopen(path, false)
	if err != nil {
		return nil, fmt.Errorf("cuda: loading %s from %s: %w", what, path, err)
	}
	if bareName(path) {
		if p := loadedPath(h); p != "" {
			path = p
		}
	}
	return &library{what: what, path: path, handle: h}, nil
}

// proc is a C function of a library, called with integer and pointer
// arguments (every function bound here takes only those).
type proc struct {
	name string
	addr uintptr
}

// bind resolves the named symbols into the procs given, in order. Every
// missing symbol is listed in one error, which says the library is likely
// too old.
func (l *library) bind(procs map[string]*proc) error {
	var missing []string
	for name, p := range procs {
		addr, err := dlsym(l.handle, name)
		if err != nil || addr == 0 {
			missing = append(missing, name)
			continue
		}
		*p = proc{name: name, addr: addr}
	}
	if len(missing) > 0 {
		sort.Strings(missing)
		return fmt.Errorf("cuda: %s (%s) lacks %s; it is probably older than CUDA 12, so install a newer one or point LD_LIBRARY_PATH at one",
			l.what, l.path, strings.Join(missing, ", "))
	}
	return nil
}

// bindFirst resolves the first of names the library has into p (for calls
// whose versioned name changed between CUDA releases).
func (l *library) bindFirst(p *proc, names ...string) error {
	for _, n := range names {
		if addr, err := dlsym(l.handle, n); err == nil && addr != 0 {
			*p = proc{name: n, addr: addr}
			return nil
		}
	}
	return fmt.Errorf("cuda: %s (%s) has none of %s; install a newer one or point LD_LIBRARY_PATH at one", l.what, l.path, strings.Join(names, ", "))
}

// call calls p with args and returns its integer result (a status code).
// Pointers passed as uintptr(unsafe.Pointer(x)) in the call expression
// are kept alive and unmoved for the call (go:uintptrescapes moves what
// they point to to the heap).
//
//go:uintptrescapes
func (p proc) call(args ...uintptr) uintptr {
	if p.addr == 0 {
		panic("cuda: call of unbound " + p.name)
	}
	r, _, _ := purego.SyscallN(p.addr, args...)
	return r
}
