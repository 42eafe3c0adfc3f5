package cuda

import (
	"fmt"
	"strings"
	"unsafe"
)

// nvrtc binds the runtime compiler.
type nvrtc struct {
	lib *library

	version, create, compile, destroy proc
	logSize, log, cubinSize, cubin    proc
	ptxSize, ptx                      proc
}

func openNVRTC(e env) (*nvrtc, error) {
	path, err := e.find("NVRTC", nvrtcNames)
	if err != nil {
		return nil, err
	}
	lib, err := openLibrary("NVRTC", path)
	if err != nil {
		return nil, err
	}
	n := &nvrtc{lib: lib}
	return n, lib.bind(map[string]*proc{
		"nvrtcVersion": &n.version, "nvrtcCreateProgram": &n.create, "nvrtcCompileProgram": &n.compile,
		"nvrtcDestroyProgram": &n.destroy, "nvrtcGetProgramLogSize": &n.logSize, "nvrtcGetProgramLog": &n.log,
		"nvrtcGetCUBINSize": &n.cubinSize, "nvrtcGetCUBIN": &n.cubin, "nvrtcGetPTXSize": &n.ptxSize, "nvrtcGetPTX": &n.ptx,
	})
}

func (n *nvrtc) check(call string, status uintptr) error {
	return statusError(nvrtcStatus, call, status)
}

// Version returns NVRTC's version as major*1000 + minor*10 (like the driver's).
func (n *nvrtc) Version() (int, error) {
	var major, minor int32
	if err := n.check("nvrtcVersion", n.version.call(uintptr(unsafe.Pointer(&major)), uintptr(unsafe.Pointer(&minor)))); err != nil {
		return 0, err
	}
	return int(major)*1000 + int(minor)*10, nil
}

// compileOptions are the NVRTC options for arch ("sm_90" for a cubin,
// "compute_90" for PTX the driver finishes).
func compileOptions(arch string) []string {
	return []string{"--gpu-architecture=" + arch, "--std=c++17"}
}

// Compile compiles src for arch and returns a cubin, or PTX when arch is
// a compute_XX virtual architecture. A compilation error carries the
// compiler's log.
func (n *nvrtc) Compile(src, name, arch string) ([]byte, error) {
	var prog uintptr
	csrc, cname := cstr(src), cstr(name)
	if err := n.check("nvrtcCreateProgram", n.create.call(uintptr(unsafe.Pointer(&prog)), uintptr(unsafe.Pointer(&csrc[0])),
		uintptr(unsafe.Pointer(&cname[0])), 0, 0, 0)); err != nil {
		return nil, err
	}
	defer n.destroy.call(uintptr(unsafe.Pointer(&prog)))
	opts := compileOptions(arch)
	cs := make([][]byte, len(opts))
	ptrs := make([]uintptr, len(opts))
	for i, o := range opts {
		cs[i] = cstr(o)
		ptrs[i] = uintptr(unsafe.Pointer(&cs[i][0]))
	}
	status := n.compile.call(prog, uintptr(len(ptrs)), uintptr(unsafe.Pointer(&ptrs[0])))
	if err := n.check("nvrtcCompileProgram", status); err != nil {
		log := n.programLog(prog)
		if e, ok := err.(*Error); ok && e.Name == "NVRTC_ERROR_COMPILATION" {
			return nil, fmt.Errorf("cuda: compiling the kernels for %s failed (this is a bug; please report it):\n%s", arch, log)
		}
		return nil, fmt.Errorf("%w\n%s", err, log)
	}
	sizeFn, getFn, what := n.cubinSize, n.cubin, "CUBIN"
	if strings.HasPrefix(arch, "compute_") {
		sizeFn, getFn, what = n.ptxSize, n.ptx, "PTX"
	}
	var size uintptr
	if err := n.check("nvrtcGet"+what+"Size", sizeFn.call(prog, uintptr(unsafe.Pointer(&size)))); err != nil {
		return nil, err
	}
	out := make([]byte, size)
	if size > 0 {
		if err := n.check("nvrtcGet"+what, getFn.call(prog, uintptr(unsafe.Pointer(&out[0])))); err != nil {
			return nil, err
		}
	}
	return out, nil
}

func (n *nvrtc) programLog(prog uintptr) string {
	var size uintptr
	if n.logSize.call(prog, uintptr(unsafe.Pointer(&size))) != 0 || size == 0 {
		return ""
	}
	buf := make([]byte, size)
	if n.log.call(prog, uintptr(unsafe.Pointer(&buf[0]))) != 0 {
		return ""
	}
	return strings.TrimRight(string(buf), "\x00\n")
}

// cstr returns s as a NUL-terminated byte slice.
func cstr(s string) []byte { return append([]byte(s), 0) }
