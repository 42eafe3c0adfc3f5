package cuda

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/minitron/minitron/kernels"
)

// realNVRTC opens the NVRTC in $MINITRON_TEST_NVRTC_DIR (.ci/run fetches
// Debian's CUDA 11.8 one) through the backend's own discovery, with that
// directory only on the LD_LIBRARY_PATH the discovery reads, not on the
// loader's path, as when it is found through $CUDA_HOME or a Python
// folder. Without the variable the test skips, or fails when
// MINITRON_REQUIRE_NVRTC=1.
func realNVRTC(t *testing.T) *nvrtc {
	t.Helper()
	dir := os.Getenv("MINITRON_TEST_NVRTC_DIR")
	if dir == "" {
		if os.Getenv("MINITRON_REQUIRE_NVRTC") == "1" {
			t.Fatal("MINITRON_REQUIRE_NVRTC=1 but MINITRON_TEST_NVRTC_DIR is not set (.ci/run sets it to Debian's NVRTC)")
		}
		t.Skip("MINITRON_TEST_NVRTC_DIR is not set: no real NVRTC to compile the kernels with (.ci/run fetches one)")
	}
	e := onlyDir(dir)
	n, err := openNVRTC(e, 0)
	if err != nil {
		t.Fatalf("NVRTC from MINITRON_TEST_NVRTC_DIR=%s: %v", dir, err)
	}
	if filepath.Dir(n.Path()) != filepath.Clean(dir) {
		t.Fatalf("NVRTC loaded from %s, not from %s", n.Path(), dir)
	}
	return n
}

// NVRTC is loaded locally, its builtins globally: nvrtc* symbols do not
// enter the global scope (where they would interpose on a second NVRTC's),
// while the builtins library is there for NVRTC to find by name.
func TestRealNVRTCScope(t *testing.T) {
	realNVRTC(t)
	if p, err := dlsym(0, "nvrtcCompileProgram"); err == nil && p != 0 {
		t.Error("nvrtcCompileProgram is in the global scope: NVRTC was loaded with RTLD_GLOBAL")
	}
	if p, err := dlsym(0, "getArchBuiltins"); err != nil || p == 0 {
		t.Errorf("the builtins library is not in the global scope: %v", err)
	}
}

// onlyDir is the real file system with no environment but dir as
// LD_LIBRARY_PATH (which discovery reads; the loader's own path is the
// process's) and no loader cache.
func onlyDir(dir string) env {
	e := osEnv
	e.getenv = func(k string) string {
		if k == "LD_LIBRARY_PATH" {
			return dir
		}
		return ""
	}
	e.ldcache = nil
	return e
}

var realCompiles sync.Map // arch → *Compiled, shared by the tests of one run

func realCompile(t *testing.T, n *nvrtc, arch string) *Compiled {
	t.Helper()
	if c, ok := realCompiles.Load(arch); ok {
		return c.(*Compiled)
	}
	c, err := compileWith(n, arch)
	if err != nil {
		t.Fatalf("compiling the kernels for %s: %v", arch, err)
	}
	realCompiles.Store(arch, c)
	return c
}

// TestRealNVRTCCompile compiles the kernels for the A100's and the H100's
// architectures with a real NVRTC and checks the cubins: ELF files for
// the CUDA machine (EM_CUDA, 190) of the requested SM (the low byte of
// e_flags), defining every kernel the sources declare as a global
// function, and ptxas's report covering every kernel.
func TestRealNVRTCCompile(t *testing.T) {
	n := realNVRTC(t)
	ver, err := n.Version()
	if err != nil || ver < 11080 {
		t.Fatalf("NVRTC version %d (%v), want 11.8 or newer", ver, err)
	}
	kern, err := kernels.Kernels()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for k := range kern {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, c := range []struct {
		arch string
		sm   uint32
	}{{"sm_80", 80}, {"sm_90", 90}} {
		t.Run(c.arch, func(t *testing.T) {
			comp := realCompile(t, n, c.arch)
			f, err := elf.NewFile(bytes.NewReader(elfVersion1(comp.Image)))
			if err != nil {
				t.Fatalf("the cubin is not an ELF file: %v", err)
			}
			if f.Machine != 190 || uint32(f.FileHeader.Entry) != 0 {
				t.Errorf("machine %v, want EM_CUDA (190)", f.Machine)
			}
			flags := elfFlags(comp.Image)
			if flags&0xff != c.sm {
				t.Errorf("e_flags %#x: SM %d, want %d", flags, flags&0xff, c.sm)
			}
			syms, err := f.Symbols()
			if err != nil {
				t.Fatal(err)
			}
			funcs := map[string]bool{}
			for _, s := range syms {
				if elf.ST_TYPE(s.Info) == elf.STT_FUNC && elf.ST_BIND(s.Info) == elf.STB_GLOBAL {
					funcs[s.Name] = true
				}
			}
			var usage []string
			for _, u := range comp.Usage {
				usage = append(usage, u.Name)
				if u.Registers <= 0 {
					t.Errorf("ptxas reports %d registers for %s", u.Registers, u.Name)
				}
				// A block of the kernel's launch bounds fits one multiprocessor.
				k := kern[u.Name]
				if regs := blockRegisters(u.Registers, k.MaxThreads); k.MaxThreads == 0 || regs > 64<<10 {
					t.Errorf("%s: %d registers × %d threads need %d registers a block, above the 65536 of an SM", u.Name, u.Registers, k.MaxThreads, regs)
				}
				if need, ok := attentionShared[u.Name]; ok {
					if total, limit := u.SharedBytes+need, optinShared[c.arch]; total > limit {
						t.Errorf("%s: %d bytes of static and %d of dynamic shared memory, above the %d %s allows a block", u.Name, u.SharedBytes, need, limit, c.arch)
					}
				}
			}
			for _, k := range names {
				if !funcs[k] {
					t.Errorf("kernel %s is not a global function of the cubin", k)
				}
			}
			if strings.Join(usage, " ") != strings.Join(names, " ") {
				t.Errorf("ptxas reported on %v, want %v", usage, names)
			}
			t.Logf("%s: %d bytes, %d kernels, NVRTC %s", c.arch, len(comp.Image), len(names), cudaVersion(ver))
			cuobjdumpCheck(t, comp, names)
		})
	}
}

// blockRegisters is the register file a block of threads takes on sm_80
// and sm_90: registers are allocated per warp in units of 256.
func blockRegisters(perThread, threads int) int {
	warps := (threads + 31) / 32
	return warps * ((perThread*32 + 255) / 256 * 256)
}

// optinShared is the shared memory a block may opt into
// (cuFuncSetAttribute) by architecture, static and dynamic together.
var optinShared = map[string]int{"sm_80": 163 << 10, "sm_90": 227 << 10}

// elfVersion1 returns a copy of a cubin with the ELF version fields
// (e_ident[EI_VERSION] and e_version) set to EV_CURRENT: NVIDIA stores
// the toolkit's version there, which debug/elf refuses.
func elfVersion1(b []byte) []byte {
	c := append([]byte(nil), b...)
	if len(c) >= 24 {
		c[6] = 1
		c[20], c[21], c[22], c[23] = 1, 0, 0, 0
	}
	return c
}

// elfFlags reads e_flags of a 64-bit little-endian ELF file (debug/elf
// does not expose it).
func elfFlags(b []byte) uint32 {
	if len(b) < 52 {
		return 0
	}
	return uint32(b[48]) | uint32(b[49])<<8 | uint32(b[50])<<16 | uint32(b[51])<<24
}

// cuobjdumpCheck reads a cubin with NVIDIA's cuobjdump when
// $MINITRON_TEST_CUDA_BIN names a directory holding it: the code is for
// the architecture, and its resource table (registers and stack of every
// function) agrees with what ParseUsage read from ptxas's report.
func cuobjdumpCheck(t *testing.T, c *Compiled, names []string) {
	bin := os.Getenv("MINITRON_TEST_CUDA_BIN")
	if bin == "" {
		t.Log("MINITRON_TEST_CUDA_BIN is not set: cuobjdump check skipped")
		return
	}
	path := filepath.Join(t.TempDir(), c.Arch+".cubin")
	if err := os.WriteFile(path, c.Image, 0o644); err != nil {
		t.Fatal(err)
	}
	tool := filepath.Join(bin, "cuobjdump")
	out, err := exec.Command(tool, "-sass", "-fun", "add", path).CombinedOutput()
	if err != nil {
		t.Fatalf("cuobjdump -sass: %v\n%s", err, out)
	}
	if !bytes.Contains(out, []byte("code for "+c.Arch)) || !bytes.Contains(out, []byte("Function : add")) {
		t.Errorf("cuobjdump does not read the cubin as %s code with the add kernel:\n%.300s", c.Arch, out)
	}
	out, err = exec.Command(tool, "-res-usage", path).CombinedOutput()
	if err != nil {
		t.Fatalf("cuobjdump -res-usage: %v\n%s", err, out)
	}
	// " Function add:\n  REG:16 STACK:0 SHARED:0 LOCAL:0 ..."
	res := map[string]string{}
	for _, m := range regexp.MustCompile(`Function (\w+):\s+REG:(\d+) STACK:(\d+)`).FindAllStringSubmatch(string(out), -1) {
		res[m[1]] = m[2] + " " + m[3]
	}
	for _, u := range c.Usage {
		if got, want := res[u.Name], fmt.Sprintf("%d %d", u.Registers, u.StackBytes); got != want {
			t.Errorf("%s: cuobjdump's registers and stack %q, ptxas's report parsed as %q", u.Name, got, want)
		}
	}
	if len(c.Usage) != len(names) {
		t.Errorf("%d kernels in the usage report, %d declared", len(c.Usage), len(names))
	}
}

// TestRealNVRTCPTXFallback: for a GPU newer than NVRTC knows (sm_100 for
// NVRTC 11.8, which refuses it with NVRTC_ERROR_INVALID_OPTION), the
// kernels are compiled to PTX for the newest architecture it knows, for
// the driver to finish.
func TestRealNVRTCPTXFallback(t *testing.T) {
	n := realNVRTC(t)
	if ver, _ := n.Version(); ver >= 12080 {
		t.Skipf("NVRTC %s knows sm_100", cudaVersion(ver))
	}
	var logs []string
	img, err := compileKernels(n, deviceInfo{Major: 10, Minor: 0, Driver: 13000}, 7, t.TempDir(), func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) })
	if err != nil {
		t.Fatal(err)
	}
	if len(img) == 0 || img[len(img)-1] != 0 {
		t.Fatal("PTX image is not NUL-terminated")
	}
	ptx := string(img[:len(img)-1])
	if !strings.Contains(ptx, ".target sm_90") || !strings.Contains(ptx, ".entry add(") {
		t.Errorf("not PTX for sm_90 with the add kernel:\n%.400s", ptx)
	}
	if len(logs) != 1 || !strings.Contains(logs[0], "compiled 7 kernels for compute_90") {
		t.Errorf("logs %q", logs)
	}
}

// fakeCompiler answers like NVRTC: it knows the architectures in known,
// refuses others with NVRTC_ERROR_INVALID_OPTION wrapped with the log, as
// nvrtc.Compile returns it.
type fakeCompiler struct {
	known    map[string]bool
	compiled []string
	id       string
}

func (f *fakeCompiler) Version() (int, error) { return 12040, nil }
func (f *fakeCompiler) Identity() string      { return "fake" + f.id }
func (f *fakeCompiler) Compile(src, name, arch string, extra ...string) ([]byte, string, error) {
	f.compiled = append(f.compiled, arch)
	if !f.known[arch] {
		err := &Error{Call: "nvrtcCompileProgram", Status: 5, Name: "NVRTC_ERROR_INVALID_OPTION"}
		return nil, "invalid value for --gpu-architecture", fmt.Errorf("%w\n%s", err, "nvrtc: error: invalid value for --gpu-architecture (-arch)")
	}
	return []byte("image for " + arch + " by " + f.Identity()), "", nil
}

// Two NVRTCs of the same version (a toolkit's and a CPU stand-in's) do
// not share cached kernels; the same one does.
func TestCacheSeparatesNVRTCs(t *testing.T) {
	dir := t.TempDir()
	gpu := deviceInfo{Major: 9, Driver: 13000}
	get := func(id string) (string, int) {
		fc := &fakeCompiler{known: map[string]bool{"sm_90": true}, id: id}
		img, err := compileKernels(fc, gpu, 1, dir, func(string, ...any) {})
		if err != nil {
			t.Fatal(err)
		}
		return string(img), len(fc.compiled)
	}
	for _, c := range []struct {
		id, want string
		compiles int
	}{{"A", "image for sm_90 by fakeA", 1}, {"B", "image for sm_90 by fakeB", 1}, {"A", "image for sm_90 by fakeA", 0}} {
		if img, n := get(c.id); img != c.want || n != c.compiles {
			t.Errorf("NVRTC %s: %q after %d compiles, want %q after %d", c.id, img, n, c.want, c.compiles)
		}
	}
}

func TestCompileKernelsFallback(t *testing.T) {
	cases := []struct {
		name      string
		known     []string
		gpu       deviceInfo
		want      string // the image, "" for an error
		wantTried []string
	}{
		{"cubin", []string{"sm_90", "compute_90"}, deviceInfo{Major: 9, Minor: 0}, "image for sm_90 by fake", []string{"sm_90"}},
		{"PTX of the GPU's architecture", []string{"compute_100", "compute_90"}, deviceInfo{Major: 10, Minor: 0}, "image for compute_100 by fake\x00", []string{"sm_100", "compute_100"}},
		{"PTX of an older architecture", []string{"sm_90", "compute_90"}, deviceInfo{Major: 12, Minor: 0}, "image for compute_90 by fake\x00", []string{"sm_120", "compute_120", "compute_90"}},
		{"nothing known", nil, deviceInfo{Major: 12, Minor: 0}, "", []string{"sm_120", "compute_120", "compute_90", "compute_80"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			known := map[string]bool{}
			for _, k := range c.known {
				known[k] = true
			}
			fc := &fakeCompiler{known: known}
			var logs []string
			img, err := compileKernels(fc, c.gpu, 42, t.TempDir(), func(f string, a ...any) { logs = append(logs, fmt.Sprintf(f, a...)) })
			if c.want == "" {
				if err == nil || !strings.Contains(err.Error(), "cannot compile for sm_120") {
					t.Fatalf("error %v", err)
				}
			} else {
				if err != nil || string(img) != c.want {
					t.Fatalf("image %q (%v), want %q", img, err, c.want)
				}
				// The log counts kernels, not bytes of source.
				if len(logs) != 1 || !strings.HasPrefix(logs[0], "cuda: compiled 42 kernels for ") {
					t.Fatalf("logs %q", logs)
				}
			}
			if strings.Join(fc.compiled, " ") != strings.Join(c.wantTried, " ") {
				t.Fatalf("tried %v, want %v", fc.compiled, c.wantTried)
			}
		})
	}
	// Another error is not a reason to try another architecture.
	boom := &fakeBoom{}
	if _, err := compileKernels(boom, deviceInfo{Major: 9}, 1, t.TempDir(), func(string, ...any) {}); !errors.Is(err, errBoom) || boom.n != 1 {
		t.Fatalf("error %v after %d compiles", err, boom.n)
	}
}

var errBoom = errors.New("boom")

type fakeBoom struct{ n int }

func (f *fakeBoom) Version() (int, error) { return 12040, nil }
func (f *fakeBoom) Identity() string      { return "boom" }
func (f *fakeBoom) Compile(string, string, string, ...string) ([]byte, string, error) {
	f.n++
	return nil, "", fmt.Errorf("cuda: %w", errBoom)
}

func TestCompileArchChecked(t *testing.T) {
	for _, a := range []string{"90", "sm90", "sm_90 --x", "", "compute-90"} {
		if _, err := compileWith(&fakeCompiler{}, a); err == nil || !strings.Contains(err.Error(), "use sm_XX") {
			t.Errorf("architecture %q: %v", a, err)
		}
	}
	if _, err := compileWith(&fakeCompiler{}, "sm_100"); err == nil || !strings.Contains(err.Error(), "NVRTC 12.4 does not know sm_100") {
		t.Errorf("unknown architecture: %v", err)
	}
}

// A ptxas report as NVRTC 11.8 writes it (with --ptxas-options=-v), a
// device function's properties in the middle, and a kernel that spills.
const ptxasLog = `ptxas info    : 144 bytes gmem
ptxas info    : Compiling entry function 'rope' for 'sm_90'
ptxas info    : Function properties for rope
ptxas         .     48 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 38 registers
ptxas info    : Function properties for __internal_trig_reduction_slowpathd
ptxas         .     40 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Compiling entry function 'attention' for 'sm_90'
ptxas info    : Function properties for attention
ptxas         .     16 bytes stack frame, 12 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 255 registers, 2112 bytes smem, 400 bytes cmem[0]
`

func TestParseUsage(t *testing.T) {
	got := ParseUsage(ptxasLog)
	want := []KernelUsage{
		{Name: "attention", Registers: 255, StackBytes: 16, SpillStores: 12, SpillLoads: 8, SharedBytes: 2112},
		{Name: "rope", Registers: 38, StackBytes: 48},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("parsed %+v\nwant %+v", got, want)
	}
	if ParseUsage("") != nil {
		t.Fatal("usage from an empty log")
	}
}

func TestDriverRelease(t *testing.T) {
	for in, want := range map[string]string{
		"NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 07:09:12 UTC 2025\nGCC version:  gcc version 12.2.0\n":                      "580.65.06",
		"NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  570.133.20  Release Build  (dvs-builder@U16-I3-B08-1-1)  Thu Mar 20 00:03:08 UTC 2025\n": "570.133.20",
		"": "",
	} {
		if got := driverRelease(in); got != want {
			t.Errorf("driverRelease(%q) = %q, want %q", in, got, want)
		}
	}
}

// An NVRTC whose file name does not tell its version is loaded and asked:
// one newer than the driver, or older than the minimum, is skipped.
func TestRealNVRTCVersionChecks(t *testing.T) {
	n := realNVRTC(t)
	dir := t.TempDir()
	if err := os.Symlink(n.Path(), filepath.Join(dir, "libnvrtc.so")); err != nil {
		t.Fatal(err)
	}
	e := onlyDir(dir)
	spec := nvrtcSpec
	spec.names = []string{"libnvrtc.so"}
	for _, c := range []struct {
		maxMajor, minVersion int
		reason               string
	}{
		{10, 0, "CUDA 11 is newer than the driver's CUDA 10"},
		{0, 12000, "version 11.8 is older than 12.0"},
		{11, 11080, ""},
	} {
		spec.minVersion = c.minVersion
		_, err := openNVRTCSpec(e, spec, c.maxMajor)
		if c.reason == "" {
			if err != nil {
				t.Errorf("max CUDA %d, min %d: %v", c.maxMajor, c.minVersion, err)
			}
			continue
		}
		var me *MissingError
		if !errors.As(err, &me) || len(me.Rejected) == 0 || me.Rejected[0].Reason != c.reason {
			t.Errorf("max CUDA %d, min %d: %v, want %q", c.maxMajor, c.minVersion, err, c.reason)
		}
	}
}
