package recipes

import (
	"path/filepath"

	"github.com/minitron/minitron/train"
)

// Where each stage writes, under the run directory r.Out.
func (r *Recipe) datasetDir(name string) string { return filepath.Join(r.Out, "data", name) }
func (r *Recipe) scoresPath() string            { return filepath.Join(r.Out, "importance", "scores.safetensors") }
func (r *Recipe) prunedDir() string             { return filepath.Join(r.Out, "pruned") }
func (r *Recipe) distillDir() string            { return filepath.Join(r.Out, "distill") }
func (r *Recipe) studentDir() string            { return filepath.Join(r.distillDir(), train.FinalDir) }
func (r *Recipe) reportPath() string            { return filepath.Join(r.Out, "eval", "report.json") }
func (r *Recipe) exportDir() string             { return filepath.Join(r.Out, "export") }

// exportPath is where export format f ("hf" or "gguf") writes.
func (r *Recipe) exportPath(f string) string {
	if f == "gguf" {
		return filepath.Join(r.exportDir(), r.Name+"-"+r.Export.GGUFDType+".gguf")
	}
	return filepath.Join(r.exportDir(), f)
}

// Output is one result of a run and where it is.
type Output struct {
	Stage, What, Path string
}

// Outputs lists where a run of the recipe puts its results, in stage
// order.
func (r *Recipe) Outputs() []Output {
	var out []Output
	for _, d := range r.Data.Datasets {
		if d.Path == "" {
			out = append(out, Output{"data", "dataset " + d.Name, r.datasetDir(d.Name)})
		}
	}
	out = append(out,
		Output{"importance", "importance scores", r.scoresPath()},
		Output{"prune", "pruned student", r.prunedDir()},
		Output{"distill", "distillation run (metrics.jsonl, config.yaml, checkpoints)", r.distillDir()},
		Output{"distill", "distilled student", r.studentDir()},
		Output{"eval", "evaluation report", r.reportPath()})
	for _, f := range r.Export.Formats {
		what := map[string]string{"hf": "Hugging Face directory", "gguf": "GGUF file for llama.cpp"}[f]
		out = append(out, Output{"export", what, r.exportPath(f)})
	}
	return out
}
