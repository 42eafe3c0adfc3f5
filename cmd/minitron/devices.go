package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/sys/cpu"

	"github.com/minitron/minitron/backend/cpu/gemm"
	"github.com/minitron/minitron/backend/cuda"
	"github.com/minitron/minitron/diskio"
)

func newDevices() *cobra.Command {
	var asJSON, noKernels bool
	var compile []string
	var out string
	cmd := &cobra.Command{
		Use:   "devices",
		Short: "Show the CPU, the CUDA libraries and GPUs found, and whether the kernels compile and load",
		Long: `devices shows what this machine offers to --device:

  the CPU: model, logical CPUs, AVX2 / AVX-512, the float32 GEMM kernel used;
  CUDA: for the driver, NVRTC and cuBLAS, the file found and its CUDA
  version, or what is missing and where it was sought (and which files were
  skipped, e.g. an NVRTC newer than the driver); NCCL (for training on
  several GPUs) and its version; each GPU: name, memory,
  compute capability, driver version, and whether the kernels compile (or
  come from the cache) and load on it.

With --compile ARCH,... it compiles the kernels instead, with the NVRTC
found (the newest; no driver or GPU needed), for each architecture: sm_XX
gives a cubin, compute_XX PTX. It writes --out DIR/ARCH.cubin (or .ptx) and,
for cubins, DIR/ARCH.log (NVRTC's log with ptxas's report), prints each kernel's
registers, stack, spills and static shared memory, and exits non-zero if any
architecture fails.`,
		Example: `  minitron devices
  minitron devices --json
  minitron devices --compile sm_80,sm_90 --out /tmp/kernels`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			w := cmd.OutOrStdout()
			if len(compile) > 0 {
				if out == "" {
					return fmt.Errorf("--compile needs --out DIR for the compiled kernels")
				}
				return compileArchs(w, compile, out, asJSON)
			}
			if cmd.Flags().Changed("out") {
				return fmt.Errorf("--out is for --compile")
			}
			rep := devicesReport{CPU: cpuReport(), CUDA: cuda.Probe(!noKernels, "", func(s string) { fmt.Fprintln(cmd.ErrOrStderr(), s) })}
			if asJSON {
				enc := json.NewEncoder(w)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			rep.print(w)
			return nil
		},
	}
	f := cmd.Flags()
	f.BoolVar(&asJSON, "json", false, "print JSON instead of text")
	f.BoolVar(&noKernels, "no-kernels", false, "do not open the GPUs to check that the kernels compile and load")
	f.StringSliceVar(&compile, "compile", nil, "compile the kernels for these architectures (sm_80,sm_90,compute_90) instead of reporting")
	f.StringVar(&out, "out", "", "with --compile: the directory for ARCH.cubin / ARCH.ptx and ARCH.log")
	return cmd
}

type devicesReport struct {
	CPU  cpuInfo     `json:"cpu"`
	CUDA cuda.Report `json:"cuda"`
}

type cpuInfo struct {
	Model      string   `json:"model"`
	Arch       string   `json:"arch"`
	CPUs       int      `json:"logical_cpus"`
	Threads    int      `json:"threads"` // GOMAXPROCS: what the CPU backend uses
	Features   []string `json:"features"`
	GEMMKernel string   `json:"gemm_kernel"`
}

func cpuReport() cpuInfo {
	c := cpuInfo{Model: cpuModel(), Arch: runtime.GOARCH, CPUs: runtime.NumCPU(), Threads: runtime.GOMAXPROCS(0), GEMMKernel: gemm.Kernel()}
	for _, f := range []struct {
		name string
		has  bool
	}{
		{"AVX2", cpu.X86.HasAVX2}, {"FMA", cpu.X86.HasFMA}, {"AVX-512F", cpu.X86.HasAVX512F}, {"AVX-512BW", cpu.X86.HasAVX512BW},
		{"AVX-512VL", cpu.X86.HasAVX512VL}, {"AVX-512BF16", cpu.X86.HasAVX512BF16}, {"ASIMD", cpu.ARM64.HasASIMD}, {"SVE", cpu.ARM64.HasSVE},
	} {
		if f.has {
			c.Features = append(c.Features, f.name)
		}
	}
	return c
}

// cpuModel is the processor's name from /proc/cpuinfo ("model name" on
// x86, "Model" or "CPU part" elsewhere), or "unknown".
func cpuModel() string {
	f, err := os.Open("/proc/cpuinfo")
	if err != nil {
		return "unknown"
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if k = strings.TrimSpace(k); ok && (k == "model name" || k == "Model") {
			return strings.TrimSpace(v)
		}
	}
	return "unknown"
}

func (r devicesReport) print(w io.Writer) {
	c := r.CPU
	feats := "none of AVX2, AVX-512"
	if len(c.Features) > 0 {
		feats = strings.Join(c.Features, " ")
	}
	fmt.Fprintf(w, "CPU          %s (%s), %d logical CPUs, %d threads used; %s; float32 GEMM kernel %s\n",
		c.Model, c.Arch, c.CPUs, c.Threads, feats, c.GEMMKernel)
	lib := func(l cuda.Library) {
		switch {
		case l.Error != "":
			fmt.Fprintf(w, "%-12s missing: %s\n", l.What, l.Error)
		case l.Version != "" && l.What == "NCCL":
			fmt.Fprintf(w, "%-12s %s (%s; for several GPUs)\n", l.What, l.Path, l.Version)
		case l.Version != "":
			fmt.Fprintf(w, "%-12s %s (CUDA %s)\n", l.What, l.Path, l.Version)
		default:
			fmt.Fprintf(w, "%-12s %s\n", l.What, l.Path)
		}
	}
	u := r.CUDA
	u.Driver.What = "CUDA driver"
	lib(u.Driver)
	lib(u.NVRTC)
	lib(u.CuBLAS)
	lib(u.NCCL)
	if u.GPUsErr != "" {
		fmt.Fprintf(w, "%-12s none: %s\n", "GPUs", u.GPUsErr)
	} else if len(u.GPUs) == 0 {
		fmt.Fprintf(w, "%-12s none visible (check nvidia-smi and CUDA_VISIBLE_DEVICES)\n", "GPUs")
	}
	for _, g := range u.GPUs {
		name := fmt.Sprintf("GPU %d", g.Ordinal)
		if g.Name == "" {
			fmt.Fprintf(w, "%-12s %s\n", name, g.Kernels)
			continue
		}
		drv := "CUDA " + u.Driver.Version
		if u.DriverRelease != "" {
			drv = "driver " + u.DriverRelease + " (" + drv + ")"
		}
		fmt.Fprintf(w, "%-12s %s, %s, compute capability %s (%s), %d multiprocessors, %s", name, g.Name, human(g.Memory),
			g.ComputeCapability, g.Arch, g.SMs, drv)
		if g.Kernels != "" {
			fmt.Fprintf(w, "; kernels: %s", g.Kernels)
		}
		fmt.Fprintln(w)
	}
}

// compiledArch is one architecture's result of --compile.
type compiledArch struct {
	Arch    string             `json:"arch"`
	File    string             `json:"file,omitempty"`
	Bytes   int                `json:"bytes,omitempty"`
	Seconds float64            `json:"seconds"`
	Error   string             `json:"error,omitempty"`
	Kernels []cuda.KernelUsage `json:"kernels,omitempty"`
}

// compileArchs compiles the kernels for each architecture into dir.
func compileArchs(w io.Writer, archs []string, dir string, asJSON bool) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("--out %s: %w", dir, err)
	}
	var results []compiledArch
	var lib cuda.Library
	failed := 0
	for _, arch := range archs {
		arch = strings.TrimSpace(arch)
		start := time.Now()
		c, l, err := cuda.CompileKernels(arch)
		lib = l
		r := compiledArch{Arch: arch, Seconds: time.Since(start).Seconds()}
		if err == nil {
			ext := ".cubin"
			if strings.HasPrefix(arch, "compute_") {
				ext = ".ptx"
			}
			r.File, r.Bytes, r.Kernels = filepath.Join(dir, arch+ext), len(c.Image), c.Usage
			err = diskio.WriteFileAtomic(r.File, c.Image)
			if err == nil && c.Log != "" {
				err = diskio.WriteFileAtomic(filepath.Join(dir, arch+".log"), []byte(c.Log+"\n"))
			}
		}
		if err != nil {
			r.Error = err.Error()
			failed++
		}
		results = append(results, r)
		if !asJSON {
			printCompiled(w, r)
		}
		if lib.Path == "" { // no NVRTC: every architecture would fail alike
			break
		}
	}
	if asJSON {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		if err := enc.Encode(struct {
			NVRTC   cuda.Library   `json:"nvrtc"`
			Results []compiledArch `json:"results"`
		}{lib, results}); err != nil {
			return err
		}
	} else if lib.Path != "" {
		fmt.Fprintf(w, "NVRTC %s (CUDA %s)\n", lib.Path, lib.Version)
	}
	if failed > 0 {
		return fmt.Errorf("devices: compiling the kernels failed for %d of %d architectures", failed, len(archs))
	}
	return nil
}

func printCompiled(w io.Writer, r compiledArch) {
	if r.Error != "" {
		fmt.Fprintf(w, "%s: failed: %s\n", r.Arch, r.Error)
		return
	}
	spills := 0
	for _, k := range r.Kernels {
		if k.SpillStores+k.SpillLoads > 0 {
			spills++
		}
	}
	if len(r.Kernels) == 0 { // PTX: ptxas did not run
		fmt.Fprintf(w, "%s: %s, %d bytes, %.1f s\n", r.Arch, r.File, r.Bytes, r.Seconds)
		return
	}
	fmt.Fprintf(w, "%s: %s, %d bytes, %.1f s; %d kernels, %d with spills\n", r.Arch, r.File, r.Bytes, r.Seconds, len(r.Kernels), spills)
	fmt.Fprintf(w, "  %-28s %9s %7s %13s %12s %11s\n", "kernel", "registers", "stack", "spill stores", "spill loads", "static smem")
	for _, k := range r.Kernels {
		fmt.Fprintf(w, "  %-28s %9d %7d %13d %12d %11d\n", k.Name, k.Registers, k.StackBytes, k.SpillStores, k.SpillLoads, k.SharedBytes)
	}
}
