package cuda

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
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

// openNVRTC finds and binds NVRTC. With maxMajor > 0 (the driver's CUDA
// major version) an NVRTC of a newer CUDA is skipped: its code would not
// load on that driver.
func openNVRTC(e env, maxMajor int) (*nvrtc, error) { return openNVRTCSpec(e, nvrtcSpec, maxMajor) }

func openNVRTCSpec(e env, spec libSpec, maxMajor int) (*nvrtc, error) {
	lib, err := e.openSpec(spec, maxMajor, func(l *library) int {
		n, err := bindNVRTC(l)
		if err != nil {
			return 0
		}
		v, _ := n.Version()
		return v
	})
	if err != nil {
		return nil, err
	}
	return bindNVRTC(lib)
}

func bindNVRTC(lib *library) (*nvrtc, error) {
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

// Path returns the file NVRTC was loaded from.
func (n *nvrtc) Path() string { return n.lib.path }

// Identity names this NVRTC build for the compiled-kernel cache: its file
// (symbolic links resolved), size and modification time. Two NVRTCs of the
// same version at different places (a CUDA toolkit and a CPU stand-in that
// produces host code) never share cached kernels.
func (n *nvrtc) Identity() string {
	p := n.lib.path
	if r, err := filepath.EvalSymlinks(p); err == nil {
		p = r
	}
	if st, err := os.Stat(p); err == nil {
		return fmt.Sprintf("%s %d %d", p, st.Size(), st.ModTime().UnixNano())
	}
	return p
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

// ptxasVerbose makes NVRTC put ptxas's per-kernel resource usage
// (registers, spills, stack, shared memory) in the program log.
const ptxasVerbose = "--ptxas-options=-v"

// Compile compiles src for arch with compileOptions(arch) and extra
// options, and returns a cubin, or PTX when arch is a compute_XX virtual
// architecture, with the program log. A compilation error carries the
// compiler's log.
func (n *nvrtc) Compile(src, name, arch string, extra ...string) (img []byte, log string, err error) {
	var prog uintptr
	csrc, cname := cstr(src), cstr(name)
	if err := n.check("nvrtcCreateProgram", n.create.call(uintptr(unsafe.Pointer(&prog)), uintptr(unsafe.Pointer(&csrc[0])),
		uintptr(unsafe.Pointer(&cname[0])), 0, 0, 0)); err != nil {
		return nil, "", err
	}
	defer func() {
		n.destroy.call(uintptr(unsafe.Pointer(&prog)))
		runtime.KeepAlive(csrc)
		runtime.KeepAlive(cname)
	}()
	opts := append(compileOptions(arch), extra...)
	// The option strings are reached only through the array handed to C:
	// pin them (and the array) so the collector keeps them for the call.
	var pin runtime.Pinner
	defer pin.Unpin()
	ptrs := make([]*byte, len(opts))
	for i, o := range opts {
		ptrs[i] = &cstr(o)[0]
		pin.Pin(ptrs[i])
	}
	pin.Pin(&ptrs[0])
	status := n.compile.call(prog, uintptr(len(ptrs)), uintptr(unsafe.Pointer(&ptrs[0])))
	log = n.programLog(prog)
	if err := n.check("nvrtcCompileProgram", status); err != nil {
		if e, ok := err.(*Error); ok && e.Name == "NVRTC_ERROR_COMPILATION" {
			return nil, log, fmt.Errorf("cuda: compiling the kernels for %s failed (this is a bug; please report it):\n%s", arch, log)
		}
		return nil, log, fmt.Errorf("%w\n%s", err, log)
	}
	sizeFn, getFn, what := n.cubinSize, n.cubin, "CUBIN"
	if strings.HasPrefix(arch, "compute_") {
		sizeFn, getFn, what = n.ptxSize, n.ptx, "PTX"
	}
	var size uintptr
	if err := n.check("nvrtcGet"+what+"Size", sizeFn.call(prog, uintptr(unsafe.Pointer(&size)))); err != nil {
		return nil, log, err
	}
	out := make([]byte, size)
	if size > 0 {
		if err := n.check("nvrtcGet"+what, getFn.call(prog, uintptr(unsafe.Pointer(&out[0])))); err != nil {
			return nil, log, err
		}
	}
	return out, log, nil
}

func (n *nvrtc) programLog(prog uintptr) string {
	var size uintptr
	if int32(n.logSize.call(prog, uintptr(unsafe.Pointer(&size)))) != 0 || size == 0 {
		return ""
	}
	buf := make([]byte, size)
	if int32(n.log.call(prog, uintptr(unsafe.Pointer(&buf[0])))) != 0 {
		return ""
	}
	return strings.TrimRight(string(buf), "\x00\n")
}

// cstr returns s as a NUL-terminated byte slice.
func cstr(s string) []byte { return append([]byte(s), 0) }
