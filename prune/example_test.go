package prune_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/minitron/minitron/importance"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/prune"
)

// Prune a model to a smaller homogeneous shape with its importance scores
// (importance.Estimate's, saved to a file) and write the student as a
// Hugging Face directory. The kept heads are those of the transformers
// reference in testdata/hf/nemotron-tiny/prune.json.
func Example() {
	const teacher = "../testdata/hf/nemotron-tiny"
	cfg, err := model.LoadConfig(filepath.Join(teacher, "config.json"))
	if err != nil {
		log.Fatal(err)
	}
	scores, err := importance.Load(filepath.Join(teacher, "importance.safetensors"))
	if err != nil {
		log.Fatal(err)
	}
	plan, err := prune.NewPlan(cfg, scores, prune.Targets{Hidden: 48, Heads: 2, FFN: 96})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("kept heads per layer:", plan.Heads)
	out, err := os.MkdirTemp("", "pruned-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(out)
	student := filepath.Join(out, "student")
	rep, err := prune.Apply(context.Background(), plan, teacher, prune.ApplyOptions{Out: student})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d -> %d parameters\n", rep.ParamsBefore, rep.ParamsAfter)
	fmt.Printf("student: hidden %d, %d heads, MLP %d, %d layers\n", rep.ShapeAfter.Hidden, rep.ShapeAfter.Heads, rep.ShapeAfter.FFN, rep.ShapeAfter.Layers)
	// Output:
	// kept heads per layer: [[1 3] [0 2]]
	// 139904 -> 80352 parameters
	// student: hidden 48, 2 heads, MLP 96, 2 layers
}
