package train

import (
	"math"
	"testing"

	"github.com/minitron/minitron/model"
)

func loadShape(t *testing.T, path string) *model.Config {
	t.Helper()
	c, err := model.LoadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// TestPlanMemory checks the plan of the 4.2B student distilled from the
// 15.6B teacher against counts made by hand from the published shapes:
// student 4,190,509,056 parameters (embeddings and lm_head 2 × 256000 ×
// 3072, 32 layers of 81,801,216, final norm 6144), teacher 15,628,775,424
// (2 × 256000 × 6144, 32 × 390,094,848, final norm 12,288).
func TestPlanMemory(t *testing.T) {
	student := loadShape(t, "../bench/configs/minitron-4b.json")
	teacher := loadShape(t, "../bench/configs/nemotron-4-15b.json")
	const P, Pt = 4_190_509_056, 15_628_775_424
	def := Default().Optimizer
	bf16 := def
	bf16.MasterWeights, bf16.GradDType, bf16.StateDType = false, "bf16", "bf16"
	cases := []struct {
		name       string
		opt        OptimizerConfig
		floatBytes int
		gpus       int
		// bytes per parameter: weights, master, grads, moments
		w, master, g, mom float64
	}{
		{"gpu defaults", def, 2, 1, 2, 4, 4, 8},
		{"gpu defaults, 8 GPUs", def, 2, 8, 2, 0.5, 4, 1},
		{"all bf16", bf16, 2, 1, 2, 0, 2, 4},
		{"all bf16, 8 GPUs", bf16, 2, 8, 2, 0, 2, 0.5},
		{"cpu", def, 4, 1, 4, 0, 4, 8},
		{"cpu, bf16 asked for", bf16, 4, 1, 4, 0, 4, 8},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := PlanMemory(MemorySpec{Student: student, Teacher: teacher, Distill: true, Optimizer: c.opt, Rows: 4096, FloatBytes: c.floatBytes, GPUs: c.gpus})
			if p.StudentParams != P || p.TeacherParams != Pt {
				t.Fatalf("parameters %d and %d, want %d and %d", p.StudentParams, p.TeacherParams, P, Pt)
			}
			for _, x := range []struct {
				what string
				got  int64
				per  float64
			}{{"weights", p.Weights, c.w}, {"master", p.Master, c.master}, {"gradients", p.Grads, c.g}, {"moments", p.Moments, c.mom}} {
				if want := int64(x.per * P); x.got != want {
					t.Errorf("%s: %d bytes, want %d", x.what, x.got, want)
				}
			}
			if want := int64(Pt * c.floatBytes); p.Teacher != want {
				t.Errorf("teacher %d, want %d", p.Teacher, want)
			}
			if want := student.TrainingActivationElems(4096, false).Bytes(c.floatBytes); p.Activations != want {
				t.Errorf("activations %d, want %d", p.Activations, want)
			}
			// Two chunks of 256 rows × 256000 logits, three float32 losses per row.
			if want := int64(2*256*256000*c.floatBytes + 3*4*256); p.LossBuffers != want {
				t.Errorf("loss buffers %d, want %d", p.LossBuffers, want)
			}
		})
	}
	// Megatron's distributed-optimizer table for bf16 parameters with fp32
	// gradients: 18 bytes per parameter, 6 + 12/d sharded over d ranks.
	for _, d := range []int{1, 2, 8, 64} {
		p := PlanMemory(MemorySpec{Student: student, Optimizer: def, Rows: 1, FloatBytes: 2, GPUs: d})
		if want := 6 + 12/float64(d); math.Abs(p.PerParam()-want) > 1e-9 {
			t.Errorf("%d GPUs: %.4f bytes per parameter, want %.4f", d, p.PerParam(), want)
		}
	}
	// The 4B student's float32 state (master, gradients, moments) is the
	// issue's 67 GB; with the teacher's 31 GB and one 4096-token sequence
	// it fits an H200's 140 GiB.
	p := PlanMemory(MemorySpec{Student: student, Teacher: teacher, Distill: true, Optimizer: def, Rows: 4096, FloatBytes: 2, GPUs: 1})
	if state := p.Master + p.Grads + p.Moments; state != 16*P {
		t.Errorf("float32 state %d, want %d", state, 16*P)
	}
	if mb := MaxMicroBatch(p.Spec, 4096, 143771<<20, 64); mb < 1 {
		t.Errorf("no micro-batch fits an H200 (plan %d bytes for one sequence)", p.Total())
	}
}
