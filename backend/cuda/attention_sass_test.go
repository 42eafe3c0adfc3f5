package cuda

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"github.com/minitron/minitron/kernels"
)

// TestRealNVRTCAttentionMachineCode compiles the kernels with a real NVRTC
// for sm_80 and sm_90 and checks that the attention kernels run on the
// tensor cores and keep everything in registers: ptxas reports no spills
// and no stack for each, and in the machine code (read with NVIDIA's
// cuobjdump from $MINITRON_TEST_CUDA_BIN) each forward and backward
// kernel holds HMMA (or HGMMA) instructions.
func TestRealNVRTCAttentionMachineCode(t *testing.T) {
	n := realNVRTC(t)
	kern, err := kernels.Kernels()
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for name := range kern {
		if strings.HasPrefix(name, "attention_fwd_d") || strings.HasPrefix(name, "attention_bwd_d") {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	if len(names) < 8 {
		t.Fatalf("tensor-core attention kernels: %v", names)
	}
	for _, arch := range []string{"sm_80", "sm_90"} {
		t.Run(arch, func(t *testing.T) {
			comp := realCompile(t, n, arch)
			usage := map[string]KernelUsage{}
			for _, u := range comp.Usage {
				usage[u.Name] = u
			}
			for _, name := range names {
				u, ok := usage[name]
				if !ok {
					t.Errorf("%s: no ptxas report", name)
					continue
				}
				if u.SpillStores != 0 || u.SpillLoads != 0 || u.StackBytes != 0 {
					t.Errorf("%s: %d bytes spilled, %d reloaded, %d bytes of stack (registers %d)", name, u.SpillStores, u.SpillLoads, u.StackBytes, u.Registers)
				}
			}
			bin := os.Getenv("MINITRON_TEST_CUDA_BIN")
			if bin == "" {
				if os.Getenv("MINITRON_REQUIRE_NVRTC") == "1" {
					t.Fatal("MINITRON_REQUIRE_NVRTC=1 but MINITRON_TEST_CUDA_BIN (the folder of cuobjdump) is not set")
				}
				t.Log("MINITRON_TEST_CUDA_BIN is not set: the machine code is not read")
				return
			}
			path := filepath.Join(t.TempDir(), arch+".cubin")
			if err := os.WriteFile(path, comp.Image, 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(filepath.Join(bin, "cuobjdump"), "-sass", path).CombinedOutput()
			if err != nil {
				t.Fatalf("cuobjdump -sass: %v\n%.500s", err, out)
			}
			counts := sassCounts(string(out), "HMMA", "HGMMA", "LDSM", "LDGSTS")
			for _, name := range names {
				c := counts[name]
				if c["HMMA"]+c["HGMMA"] == 0 {
					t.Errorf("%s: no tensor-core instruction (HMMA/HGMMA) in the %s machine code", name, arch)
				}
				t.Logf("%s: %d registers, HMMA %d, HGMMA %d, LDSM %d, LDGSTS %d", name, usage[name].Registers, c["HMMA"], c["HGMMA"], c["LDSM"], c["LDGSTS"])
			}
		})
	}
}

// sassCounts counts, per function of cuobjdump -sass output, the
// instructions whose opcode starts with each of ops.
func sassCounts(sass string, ops ...string) map[string]map[string]int {
	out := map[string]map[string]int{}
	fn := regexp.MustCompile(`Function : (\w+)`)
	// "        /*0190*/                   HMMA.16816.F32.BF16 R24, R4, R20, R24 ;"
	insn := regexp.MustCompile(`^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)`)
	var cur map[string]int
	for _, line := range strings.Split(sass, "\n") {
		if m := fn.FindStringSubmatch(line); m != nil {
			cur = map[string]int{}
			out[m[1]] = cur
			continue
		}
		m := insn.FindStringSubmatch(line)
		if m == nil || cur == nil {
			continue
		}
		for _, op := range ops {
			if m[1] == op {
				cur[op]++
			}
		}
	}
	return out
}
