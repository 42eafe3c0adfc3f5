package main

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"golang.org/x/sys/cpu"

	"github.com/minitron/minitron/backend/cpu/gemm"
	"github.com/minitron/minitron/backend/cuda/emu"
)

// devices reports this machine whether or not it has CUDA: the CPU as the
// Go runtime and the CPU backend see it, and for each CUDA library a file
// or the reason it is missing.
func TestDevicesJSON(t *testing.T) {
	r := mustRun(t, "devices", "--json", "--no-kernels")
	var rep struct {
		CPU struct {
			CPUs     int      `json:"logical_cpus"`
			Threads  int      `json:"threads"`
			Features []string `json:"features"`
			GEMM     string   `json:"gemm_kernel"`
		} `json:"cpu"`
		CUDA map[string]json.RawMessage `json:"cuda"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	if rep.CPU.CPUs != runtime.NumCPU() || rep.CPU.GEMM != gemm.Kernel() {
		t.Errorf("cpu %+v, want %d logical CPUs and the %s kernel", rep.CPU, runtime.NumCPU(), gemm.Kernel())
	}
	has := strings.Join(rep.CPU.Features, " ")
	if strings.Contains(has, "AVX2") != cpu.X86.HasAVX2 || strings.Contains(has, "AVX-512F") != cpu.X86.HasAVX512F {
		t.Errorf("features %q, but AVX2 %v, AVX-512F %v", has, cpu.X86.HasAVX2, cpu.X86.HasAVX512F)
	}
	for _, k := range []string{"driver", "nvrtc", "cublas", "nccl"} {
		var lib struct{ What, Path, Error string }
		if err := json.Unmarshal(rep.CUDA[k], &lib); err != nil {
			t.Fatal(err)
		}
		if lib.What == "" || (lib.Path == "") == (lib.Error == "") {
			t.Errorf("%s: %+v, want a path or an error", k, lib)
		}
	}
	if _, ok := rep.CUDA["gpus"]; !ok {
		t.Error("no gpus list")
	}
}

func TestDevicesFlags(t *testing.T) {
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"devices", "--compile", "sm_90"}, "--compile needs --out"},
		{[]string{"devices", "--out", t.TempDir()}, "--out is for --compile"},
		{[]string{"devices", "--compile", "90", "--out", t.TempDir()}, `architecture "90": use sm_XX`},
	} {
		r := run(t, "", c.args...)
		if r.code == 0 || !strings.Contains(r.stderr+r.stdout, c.want) {
			t.Errorf("%v: exit %d, output %q, want %q", c.args, r.code, r.stderr+r.stdout, c.want)
		}
	}
}

// devices --compile with a real NVRTC ($MINITRON_TEST_NVRTC_DIR, which
// .ci/run provides) writes the cubin and ptxas's report, lists every
// kernel's registers and spills, and exits non-zero for an architecture
// the NVRTC does not know while still writing the others.
func TestDevicesCompile(t *testing.T) {
	dir := os.Getenv("MINITRON_TEST_NVRTC_DIR")
	if dir == "" {
		if os.Getenv("MINITRON_REQUIRE_NVRTC") == "1" {
			t.Fatal("MINITRON_REQUIRE_NVRTC=1 but MINITRON_TEST_NVRTC_DIR is not set")
		}
		t.Skip("MINITRON_TEST_NVRTC_DIR is not set: no real NVRTC (.ci/run fetches one)")
	}
	out := filepath.Join(t.TempDir(), "k")
	cmd := exec.Command(os.Args[0], "devices", "--compile", "sm_90,sm_100", "--out", out)
	cmd.Env = append(os.Environ(), "MINITRON_RUN_MAIN=1", "LD_LIBRARY_PATH="+dir)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err == nil || !strings.Contains(stderr.String(), "failed for 1 of 2 architectures") {
		t.Fatalf("exit %v, stderr %q: want a failure for sm_100", err, stderr.String())
	}
	for _, want := range []string{"sm_90: " + filepath.Join(out, "sm_90.cubin"), "0 with spills", "attention_bwd_d128", "attention_fwd_d128", "sm_100: failed: cuda: NVRTC 11.8 does not know sm_100", "libnvrtc.so.11.2 (CUDA 11.8)"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, stdout.String())
		}
	}
	// e_machine EM_CUDA (190), e_flags' low byte the SM.
	img, _ := os.ReadFile(filepath.Join(out, "sm_90.cubin"))
	if len(img) < 64 || string(img[:4]) != "\x7fELF" || img[18] != 190 || img[48] != 90 {
		t.Errorf("sm_90.cubin is not a CUDA ELF for SM 90 (%d bytes)", len(img))
	}
	log, err := os.ReadFile(filepath.Join(out, "sm_90.log"))
	if err != nil || !strings.Contains(string(log), "ptxas info    : Compiling entry function 'attention_fwd_d128' for 'sm_90'") {
		t.Errorf("sm_90.log: %v\n%.300s", err, log)
	}
	if _, err := os.Stat(filepath.Join(out, "sm_100.cubin")); err == nil {
		t.Error("a cubin was written for the failed architecture")
	}
}

type closeCounter struct{ n *int }

func (c closeCounter) Close() error { *c.n++; return nil }

// The backends a command opened are closed once when it ends.
func TestCloseBackends(t *testing.T) {
	n := 0
	opened = append(opened, closeCounter{&n}, closeCounter{&n})
	closeBackends()
	closeBackends()
	if n != 2 || len(opened) != 0 {
		t.Fatalf("%d closes, %d still open", n, len(opened))
	}
}

// On the CPU stand-ins, devices finds the three libraries in their folder
// (with the CUDA version of the driver and NVRTC),
// lists every device MINITRON_EMU_GPUS presents, and opens and closes each
// with the kernels compiled and loaded.
func TestDevicesCUDAStandIns(t *testing.T) {
	lib := emu.Dir(t)
	r := runEnv(t, emu.Env(lib, "MINITRON_EMU_GPUS=2"), "", "devices", "--json")
	if r.code != 0 {
		t.Fatalf("exit %d\n%s", r.code, r.stderr)
	}
	var rep struct {
		CUDA struct {
			Driver, NVRTC, CuBLAS, NCCL struct{ Path, Version, Error string }
			GPUs                        []struct {
				Ordinal int
				Name    string
				Arch    string
				Kernels string
			}
		}
	}
	if err := json.Unmarshal([]byte(r.stdout), &rep); err != nil {
		t.Fatalf("%v\n%s", err, r.stdout)
	}
	c := rep.CUDA
	for name, l := range map[string]struct{ Path, Version, Error string }{"driver": c.Driver, "NVRTC": c.NVRTC, "cuBLAS": c.CuBLAS, "NCCL": c.NCCL} {
		if l.Error != "" || filepath.Dir(l.Path) != lib || l.Version == "" {
			t.Errorf("%s: %+v, want a file in %s with its version", name, l, lib)
		}
	}
	if len(c.GPUs) != 2 {
		t.Fatalf("%d GPUs listed, want 2:\n%s", len(c.GPUs), r.stdout)
	}
	for i, g := range c.GPUs {
		if g.Ordinal != i || g.Arch != "sm_90" || g.Kernels != "ok" {
			t.Errorf("GPU %d: %+v, want sm_90 with the kernels ok", i, g)
		}
	}
}
