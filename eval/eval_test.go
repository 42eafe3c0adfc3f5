package eval

import (
	"context"
	"math"
	"path/filepath"
	"testing"

	"github.com/minitron/minitron/backend/backendtest"
	"github.com/minitron/minitron/backend/cpu"
	"github.com/minitron/minitron/data"
	"github.com/minitron/minitron/model"
	"github.com/minitron/minitron/tokenizer"
)

// TestPerplexityUniform: a model whose logits are all equal has perplexity
// equal to the vocabulary size, whatever the data.
func TestPerplexityUniform(t *testing.T) {
	dir := t.TempDir()
	tok, _ := tokenizer.LoadSentencePiece("../testdata/tokenizer/spm-nemotron-style.model")
	in := filepath.Join(dir, "in.txt")
	text := ""
	for i := 0; i < 300; i++ {
		text += "func main() { fmt.Println(\"hello\", 42) }\n"
	}
	writeFile(t, in, text)
	if _, err := data.Prepare(context.Background(), data.PrepareOptions{Inputs: []string{in}, Out: filepath.Join(dir, "ds"), Tokenizer: tok, SplitLines: true, AddEOS: true}); err != nil {
		t.Fatal(err)
	}
	ds, err := data.Open(filepath.Join(dir, "ds"))
	if err != nil {
		t.Fatal(err)
	}
	train, _, err := ds.Split(8, 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg, _ := model.ParseConfig([]byte(`{"architectures":["LlamaForCausalLM"],"vocab_size":4000,"hidden_size":16,"num_hidden_layers":1,"num_attention_heads":2,"intermediate_size":8}`))
	m, _ := model.New(cfg, cpu.New()) // zero weights: uniform logits
	// Workspaces are counted from here: a last, smaller batch gets its
	// own, and every one is freed.
	counted := backendtest.NewCounting(m.Backend)
	m.Backend = counted
	r, err := Perplexity(context.Background(), m, train, 10, 3)
	if err != nil {
		t.Fatal(err)
	}
	if n := counted.Live(); n != 0 {
		t.Fatalf("%d tensors not freed", n)
	}
	if math.Abs(r.Perplexity-4000) > 1e-2 || r.Tokens != 80 {
		t.Fatalf("perplexity %v over %d tokens, want 4000 over 80", r.Perplexity, r.Tokens)
	}
}
