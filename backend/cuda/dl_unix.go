//go:build !windows

package cuda

import "github.com/ebitengine/purego"

// dlopen loads a shared library, resolving all its symbols now.
func dlopen(path string) (uintptr, error) {
	return purego.Dlopen(path, purego.RTLD_NOW|purego.RTLD_GLOBAL)
}

// dlsym looks up a symbol of a loaded library.
func dlsym(h uintptr, name string) (uintptr, error) { return purego.Dlsym(h, name) }
