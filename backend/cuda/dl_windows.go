package cuda

import "syscall"

// dlopen loads a DLL (global has no meaning on Windows).
func dlopen(path string, global bool) (uintptr, error) {
	h, err := syscall.LoadLibrary(path)
	return uintptr(h), err
}

// dlsym looks up a function of a loaded DLL.
func dlsym(h uintptr, name string) (uintptr, error) {
	return syscall.GetProcAddress(syscall.Handle(h), name)
}

// loadedPath is not implemented on Windows.
func loadedPath(h uintptr) string { return "" }
