package main

import (
	"io"
	"os"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// TestStatefulSetConfig: the ConfigMap's agent.yaml in statefulset.yaml is
// a valid configuration with the environment and flags the pods set.
func TestStatefulSetConfig(t *testing.T) {
	b, err := os.ReadFile("statefulset.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var agentYAML string
	var args []string
	for _, doc := range strings.Split(string(b), "\n---\n") {
		var obj struct {
			Kind string            `json:"kind"`
			Data map[string]string `json:"data"`
			Spec struct {
				Template struct {
					Spec struct {
						Containers []struct {
							Args []string `json:"args"`
						} `json:"containers"`
					} `json:"spec"`
				} `json:"template"`
			} `json:"spec"`
		}
		if err := yaml.Unmarshal([]byte(doc), &obj); err != nil {
			t.Fatalf("statefulset.yaml: %v", err)
		}
		switch obj.Kind {
		case "ConfigMap":
			agentYAML = obj.Data["agent.yaml"]
		case "StatefulSet":
			args = obj.Spec.Template.Spec.Containers[0].Args
		}
	}
	if agentYAML == "" || len(args) == 0 {
		t.Fatalf("statefulset.yaml: no agent.yaml (%d bytes) or no container args %q", len(agentYAML), args)
	}
	dir := t.TempDir()
	file := writeFile(t, dir, "agent.yaml", agentYAML)
	sup, repl := writeFile(t, dir, "superuser", "s"), writeFile(t, dir, "replication", "r")
	for i, a := range args {
		switch a {
		case "/etc/pgha/config/agent.yaml":
			args[i] = file
		case "/etc/pgha/secrets/superuser":
			args[i] = sup
		case "/etc/pgha/secrets/replication":
			args[i] = repl
		}
	}
	env := []string{"PGHA_NODE=pgha-0", "PGHA_PG_ADVERTISE_HOST=pgha-0.pgha.default.svc.cluster.local"}
	cfg, err := loadConfig(args, env, io.Discard)
	if err != nil {
		t.Fatalf("statefulset.yaml's configuration: %v", err)
	}
	if cfg.cluster != "main" || len(cfg.etcdEndpoints) != 3 || cfg.pgListenAddresses != "*" {
		t.Errorf("statefulset.yaml's configuration: %+v", *cfg)
	}
}

// TestSystemdUnitFlags: every flag in the unit's ExecStart exists.
func TestSystemdUnitFlags(t *testing.T) {
	b, err := os.ReadFile("pgha-agent.service")
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]bool{"config": true}
	for _, s := range defaultConfig().settings() {
		settings[s.name] = true
	}
	// ExecStart= and its continuation lines.
	var exec strings.Builder
	in := false
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, "ExecStart=") {
			in = true
		}
		if in {
			exec.WriteString(line + "\n")
			in = strings.HasSuffix(line, "\\")
		}
	}
	flags := regexp.MustCompile(`--([a-z-]+)`).FindAllStringSubmatch(exec.String(), -1)
	if len(flags) < 3 {
		t.Fatalf("pgha-agent.service: %d flags found", len(flags))
	}
	for _, f := range flags {
		if !settings[f[1]] {
			t.Errorf("pgha-agent.service uses --%s, which pgha-agent does not define", f[1])
		}
	}
}
