package cuda

import (
	"errors"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/minitron/minitron/kernels"
)

// Library is what discovery found of one CUDA library.
type Library struct {
	What    string `json:"what"`
	Path    string `json:"path,omitempty"`    // the file loaded
	Version string `json:"version,omitempty"` // CUDA version, e.g. "13.0"
	// Error says why the library is unusable: not found (with the places
	// searched), or found but skipped or failing to load.
	Error string `json:"error,omitempty"`
}

// GPU describes one visible GPU.
type GPU struct {
	Ordinal           int    `json:"ordinal"`
	Name              string `json:"name"`
	Memory            int64  `json:"memory_bytes"`
	ComputeCapability string `json:"compute_capability"` // "9.0"
	Arch              string `json:"arch"`               // "sm_90"
	SMs               int    `json:"multiprocessors"`
	// Kernels is "ok" when the kernels compiled (or came from the cache)
	// and loaded on this GPU, else the error; empty when not checked.
	Kernels string `json:"kernels,omitempty"`
}

// Report is what Probe found.
type Report struct {
	Driver Library `json:"driver"`
	// DriverRelease is the NVIDIA kernel driver's release ("580.65.06"),
	// from /proc/driver/nvidia/version; empty when unknown.
	DriverRelease string  `json:"driver_release,omitempty"`
	NVRTC         Library `json:"nvrtc"`
	CuBLAS        Library `json:"cublas"`
	// NCCL is needed only to train on several GPUs; its version is NCCL's
	// own ("2.21.5").
	NCCL    Library `json:"nccl"`
	GPUs    []GPU   `json:"gpus"`
	GPUsErr string  `json:"gpus_error,omitempty"` // why no GPU could be listed
}

// cudaVersion formats a version number such as 13000 as "13.0".
func cudaVersion(v int) string {
	if v <= 0 {
		return ""
	}
	return fmt.Sprintf("%d.%d", v/1000, v%1000/10)
}

// Probe finds the CUDA libraries and GPUs of this machine the way Open
// does, and with checkKernels also opens each GPU (compiling the kernels
// for it, or taking them from the cache in cacheDir, "" for CacheDir())
// to see that they load, telling log (if not nil) before each GPU and when
// it compiles. It never fails: what is missing is in the report.
func Probe(checkKernels bool, cacheDir string, log func(string)) Report {
	r := Report{GPUs: []GPU{}}
	r.Driver.What, r.NVRTC.What, r.CuBLAS.What, r.NCCL.What = driverSpec.what, nvrtcSpec.what, cublasSpec.what, ncclSpec.what
	drv, err := openDriver(osEnv)
	maxMajor := 0
	if err != nil {
		r.Driver.Error = err.Error()
		r.GPUsErr = "no CUDA driver"
	} else {
		r.Driver.Path = drv.lib.path
		if v, err := drv.version(); err != nil {
			r.Driver.Error = err.Error()
		} else {
			r.Driver.Version, maxMajor = cudaVersion(v), v/1000
		}
	}
	rtc, err := openNVRTC(osEnv, maxMajor)
	if err != nil {
		r.NVRTC.Error = err.Error()
	} else {
		r.NVRTC.Path = rtc.lib.path
		if v, err := rtc.Version(); err != nil {
			r.NVRTC.Error = err.Error()
		} else {
			r.NVRTC.Version = cudaVersion(v)
		}
	}
	blas, err := openCuBLAS(osEnv, maxMajor)
	if err != nil {
		r.CuBLAS.Error = err.Error()
	} else {
		r.CuBLAS.Path, r.CuBLAS.Version = blas.lib.path, cudaVersion(blas.version())
	}
	if nc, err := openNCCL(osEnv); err != nil {
		r.NCCL.Error = err.Error()
	} else {
		r.NCCL.Path, r.NCCL.Version = nc.lib.path, nc.release()
	}
	if drv == nil {
		return r
	}
	if b, err := os.ReadFile("/proc/driver/nvidia/version"); err == nil {
		r.DriverRelease = driverRelease(string(b))
	}
	n, err := drv.start()
	if err != nil {
		r.GPUsErr = err.Error()
		return r
	}
	for i := range n {
		_, info, err := drv.init(i)
		if err != nil {
			r.GPUs = append(r.GPUs, GPU{Ordinal: i, Kernels: err.Error()})
			continue
		}
		g := GPU{Ordinal: i, Name: info.Name, Memory: info.Memory, ComputeCapability: fmt.Sprintf("%d.%d", info.Major, info.Minor),
			Arch: info.Arch(), SMs: info.SMs}
		if checkKernels {
			if log != nil {
				log(fmt.Sprintf("cuda: opening GPU %d (%s) to check the kernels", i, info.Name))
			}
			g.Kernels = "ok"
			b, err := Open(Options{Device: i, CacheDir: cacheDir, Log: log})
			if err == nil {
				err = b.Close()
			}
			if err != nil {
				g.Kernels = err.Error()
			}
		}
		r.GPUs = append(r.GPUs, g)
	}
	return r
}

// driverRelease reads the release from /proc/driver/nvidia/version:
//
//	NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.65.06  Sun Jul 27 07:09:12 UTC 2025
//	NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.65.06  Release Build  (dvs-builder@U16-I3-B08-1-1)  Sun Jul 27 06:54:38 UTC 2025
func driverRelease(s string) string {
	if m := releaseRE.FindStringSubmatch(s); m != nil {
		return m[1]
	}
	return ""
}

var releaseRE = regexp.MustCompile(`Kernel Module(?: for \S+)?\s+([0-9]+(?:\.[0-9]+)+)`)

// Compiled is the kernels compiled for one architecture.
type Compiled struct {
	Arch  string // sm_XX (cubin) or compute_XX (PTX)
	Image []byte
	// Log is NVRTC's program log, with ptxas's resource report.
	Log string
	// Usage is that report per kernel (cubins only).
	Usage []KernelUsage
}

// CompileKernels compiles the embedded kernels for arch ("sm_90" for a
// cubin, "compute_90" for PTX) with the NVRTC discovery finds (the newest;
// no driver or GPU is needed), asking ptxas for its resource report. It
// also returns the NVRTC used.
func CompileKernels(arch string) (*Compiled, Library, error) {
	lib := Library{What: nvrtcSpec.what}
	if err := checkArch(arch); err != nil {
		return nil, lib, err
	}
	rtc, err := openNVRTC(osEnv, 0)
	if err != nil {
		lib.Error = err.Error()
		return nil, lib, err
	}
	lib.Path = rtc.lib.path
	v, err := rtc.Version()
	if err != nil {
		lib.Error = err.Error()
		return nil, lib, err
	}
	lib.Version = cudaVersion(v)
	c, err := compileWith(rtc, arch)
	return c, lib, err
}

func checkArch(arch string) error {
	if !archRE.MatchString(arch) {
		return fmt.Errorf("cuda: architecture %q: use sm_XX (a cubin, e.g. sm_90) or compute_XX (PTX)", arch)
	}
	return nil
}

func compileWith(rtc compiler, arch string) (*Compiled, error) {
	if err := checkArch(arch); err != nil {
		return nil, err
	}
	img, log, err := rtc.Compile(kernels.Source(), "minitron.cu", arch, ptxasVerbose)
	if err != nil {
		if e := (*Error)(nil); errors.As(err, &e) && e.Name == "NVRTC_ERROR_INVALID_OPTION" {
			v, _ := rtc.Version()
			return nil, fmt.Errorf("cuda: NVRTC %s does not know %s; use a newer NVRTC (%w)", cudaVersion(v), arch, err)
		}
		return nil, err
	}
	return &Compiled{Arch: arch, Image: img, Log: log, Usage: ParseUsage(log)}, nil
}

var archRE = regexp.MustCompile(`^(sm|compute)_[0-9]+[a-z]?$`)

// KernelUsage is ptxas's report of one kernel's resources.
type KernelUsage struct {
	Name        string `json:"name"`
	Registers   int    `json:"registers"`
	StackBytes  int    `json:"stack_bytes"`
	SpillStores int    `json:"spill_store_bytes"`
	SpillLoads  int    `json:"spill_load_bytes"`
	SharedBytes int    `json:"static_shared_bytes"`
}

var (
	usageEntry = regexp.MustCompile(`Compiling entry function '([^']+)'`)
	usageProps = regexp.MustCompile(`(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads`)
	usageRegs  = regexp.MustCompile(`Used (\d+) registers`)
	usageSmem  = regexp.MustCompile(`(\d+) bytes smem`)
)

// ParseUsage reads ptxas's verbose report (as NVRTC's program log holds
// it with --ptxas-options=-v) into one entry per kernel, sorted by name:
//
//	ptxas info    : Compiling entry function 'rope' for 'sm_90'
//	ptxas info    : Function properties for rope
//	ptxas         .     48 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
//	ptxas info    : Used 38 registers, 128 bytes smem
//
// Properties of device functions that follow an entry's report (lines
// "Function properties for" another name) are not the entry's.
func ParseUsage(log string) []KernelUsage {
	var out []KernelUsage
	var cur *KernelUsage
	inEntry := false // the properties lines belong to the current entry
	for _, line := range strings.Split(log, "\n") {
		if m := usageEntry.FindStringSubmatch(line); m != nil {
			out = append(out, KernelUsage{Name: m[1]})
			cur, inEntry = &out[len(out)-1], false
			continue
		}
		if cur == nil {
			continue
		}
		if i := strings.Index(line, "Function properties for "); i >= 0 {
			inEntry = strings.TrimSpace(line[i+len("Function properties for "):]) == cur.Name
			continue
		}
		if m := usageProps.FindStringSubmatch(line); m != nil && inEntry {
			cur.StackBytes, _ = strconv.Atoi(m[1])
			cur.SpillStores, _ = strconv.Atoi(m[2])
			cur.SpillLoads, _ = strconv.Atoi(m[3])
			continue
		}
		if m := usageRegs.FindStringSubmatch(line); m != nil {
			cur.Registers, _ = strconv.Atoi(m[1])
			if s := usageSmem.FindStringSubmatch(line); s != nil {
				cur.SharedBytes, _ = strconv.Atoi(s[1])
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}
