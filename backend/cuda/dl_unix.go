//go:build !windows

package cuda

import (
	"unsafe"

	"github.com/ebitengine/purego"
)

// dlopen loads a shared library, resolving all its symbols now. The
// libraries the backend binds are loaded locally: their symbols are only
// looked up through their handle, and in the global scope they could
// interpose on a later library's (a second NVRTC, a stand-in). Libraries
// that another one opens by bare name or needs at load time (NVRTC's
// builtins, cuBLASLt) are loaded globally.
func dlopen(path string, global bool) (uintptr, error) {
	mode := purego.RTLD_NOW | purego.RTLD_LOCAL
	if global {
		mode = purego.RTLD_NOW | purego.RTLD_GLOBAL
	}
	return purego.Dlopen(path, mode)
}

// dlsym looks up a symbol of a loaded library.
func dlsym(h uintptr, name string) (uintptr, error) { return purego.Dlsym(h, name) }

// loadedPath returns the file a library handle was loaded from (the
// loader resolves a bare name to it), or "" when the C library cannot say.
func loadedPath(h uintptr) string {
	dlinfo, err := purego.Dlsym(purego.RTLD_DEFAULT, "dlinfo")
	if err != nil || dlinfo == 0 {
		return ""
	}
	// struct link_map { ElfW(Addr) l_addr; char *l_name; ... }
	var lm *struct {
		addr uintptr
		name *byte
	}
	const rtldDILinkmap = 2
	if r, _, _ := purego.SyscallN(dlinfo, h, rtldDILinkmap, uintptr(unsafe.Pointer(&lm))); int32(r) != 0 || lm == nil || lm.name == nil {
		return ""
	}
	return cString(lm.name)
}
