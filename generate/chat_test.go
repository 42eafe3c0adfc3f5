package generate

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestRenderChat renders real chat templates (Llama 3.1 Instruct, Mistral
// Instruct, ChatML, Nemotron-Mini Instruct) and compares with the text
// Jinja2 gives configured as transformers configures it
// (testdata/chat/make-goldens.py).
func TestRenderChat(t *testing.T) {
	dir := "../testdata/chat"
	var cases []struct {
		Name                string            `json:"name"`
		Template            string            `json:"template"`
		Specials            map[string]string `json:"specials"`
		AddGenerationPrompt bool              `json:"add_generation_prompt"`
		Messages            []map[string]any  `json:"messages"`
	}
	var goldens struct {
		Goldens []struct {
			Name  string `json:"name"`
			Text  string `json:"text"`
			Error string `json:"error"`
		} `json:"goldens"`
	}
	for name, v := range map[string]any{"cases.json": &cases, "goldens.json": &goldens} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, v); err != nil {
			t.Fatal(err)
		}
	}
	if len(cases) != len(goldens.Goldens) || len(cases) < 10 {
		t.Fatalf("%d cases, %d goldens", len(cases), len(goldens.Goldens))
	}
	for i, c := range cases {
		g := goldens.Goldens[i]
		t.Run(c.Name, func(t *testing.T) {
			src, err := os.ReadFile(filepath.Join(dir, c.Template))
			if err != nil {
				t.Fatal(err)
			}
			got, err := RenderChat(string(src), c.Specials, c.Messages, c.AddGenerationPrompt)
			if g.Error != "" {
				if err == nil || !strings.Contains(err.Error(), g.Error) {
					t.Fatalf("error %v, want one saying %q (rendered %q)", err, g.Error, got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got != g.Text {
				t.Fatalf("rendered\n%q\nwant\n%q", got, g.Text)
			}
		})
	}
}
