package deploy

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// kustomization is the part of kustomize's Kustomization we use; unknown
// fields are refused by the strict decoder, so a typo fails the test.
type kustomization struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Namespace  string   `json:"namespace"`
	Resources  []string `json:"resources"`
}

// objects is every decoded manifest, by kind and name.
type objects struct {
	statefulSets []appsv1.StatefulSet
	deployments  []appsv1.Deployment
	services     map[string]corev1.Service
	configMaps   map[string]corev1.ConfigMap
	secrets      map[string]corev1.Secret
	namespaces   map[string]corev1.Namespace
}

func loadKubernetes(t *testing.T) objects {
	t.Helper()
	dir := filepath.Join("kubernetes")
	raw, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(raw, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	if k.Kind != "Kustomization" || len(k.Resources) == 0 {
		t.Fatalf("kustomization.yaml: kind %q with %d resources", k.Kind, len(k.Resources))
	}
	objs := objects{
		services:   map[string]corev1.Service{},
		configMaps: map[string]corev1.ConfigMap{},
		secrets:    map[string]corev1.Secret{},
		namespaces: map[string]corev1.Namespace{},
	}
	listed := map[string]bool{}
	for _, res := range k.Resources {
		listed[res] = true
		data, err := os.ReadFile(filepath.Join(dir, res))
		if err != nil {
			t.Fatalf("kustomization lists %s: %v", res, err)
		}
		for i, doc := range bytes.Split(data, []byte("\n---\n")) {
			if len(bytes.TrimSpace(doc)) == 0 {
				continue
			}
			if err := decodeObject(doc, &objs, k.Namespace); err != nil {
				t.Errorf("%s document %d: %v", res, i+1, err)
			}
		}
	}
	files, _ := filepath.Glob(filepath.Join(dir, "*.yaml"))
	for _, f := range files {
		if base := filepath.Base(f); base != "kustomization.yaml" && !listed[base] {
			t.Errorf("%s is not listed in kustomization.yaml", base)
		}
	}
	return objs
}

func decodeObject(doc []byte, objs *objects, namespace string) error {
	var tm metav1.TypeMeta
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return err
	}
	var meta metav1.ObjectMeta
	var err error
	switch tm.APIVersion + "/" + tm.Kind {
	case "apps/v1/StatefulSet":
		var o appsv1.StatefulSet
		err = yaml.UnmarshalStrict(doc, &o)
		objs.statefulSets, meta = append(objs.statefulSets, o), o.ObjectMeta
	case "apps/v1/Deployment":
		var o appsv1.Deployment
		err = yaml.UnmarshalStrict(doc, &o)
		objs.deployments, meta = append(objs.deployments, o), o.ObjectMeta
	case "v1/Service":
		var o corev1.Service
		err = yaml.UnmarshalStrict(doc, &o)
		objs.services[o.Name], meta = o, o.ObjectMeta
	case "v1/ConfigMap":
		var o corev1.ConfigMap
		err = yaml.UnmarshalStrict(doc, &o)
		objs.configMaps[o.Name], meta = o, o.ObjectMeta
	case "v1/Secret":
		var o corev1.Secret
		err = yaml.UnmarshalStrict(doc, &o)
		objs.secrets[o.Name], meta = o, o.ObjectMeta
	case "v1/Namespace":
		var o corev1.Namespace
		err = yaml.UnmarshalStrict(doc, &o)
		objs.namespaces[o.Name] = o
		return err
	default:
		return fmt.Errorf("unexpected kind %s/%s", tm.APIVersion, tm.Kind)
	}
	if err != nil {
		return err
	}
	if meta.Name == "" {
		return fmt.Errorf("%s without a name", tm.Kind)
	}
	if meta.Namespace != namespace {
		return fmt.Errorf("%s %s in namespace %q, want %q", tm.Kind, meta.Name, meta.Namespace, namespace)
	}
	return nil
}

func TestKubernetesManifestsDecodeStrictly(t *testing.T) {
	objs := loadKubernetes(t)
	if len(objs.statefulSets) != 1 || len(objs.deployments) == 0 {
		t.Fatalf("want 1 CA StatefulSet and at least one Deployment, got %d and %d", len(objs.statefulSets), len(objs.deployments))
	}
	ca := objs.statefulSets[0]
	if len(ca.Spec.VolumeClaimTemplates) == 0 {
		t.Error("the CA StatefulSet has no PersistentVolumeClaim template: its keys and store would not survive a reschedule")
	}
	if _, ok := objs.services[ca.Spec.ServiceName]; !ok {
		t.Errorf("the CA StatefulSet names service %q, which is not defined", ca.Spec.ServiceName)
	}
}

func TestKubernetesSidecarContract(t *testing.T) {
	objs := loadKubernetes(t)
	for _, d := range objs.deployments {
		spec := d.Spec.Template.Spec
		var agent *corev1.Container
		for i := range spec.Containers {
			if len(spec.Containers[i].Args) > 0 && spec.Containers[i].Args[0] == "agent" {
				agent = &spec.Containers[i]
			}
		}
		if agent == nil {
			t.Errorf("deployment %s has no meshguard agent sidecar", d.Name)
			continue
		}
		env := map[string]corev1.EnvVar{}
		for _, e := range agent.Env {
			env[e.Name] = e
		}
		for _, name := range []string{"MESHGUARD_CA", "MESHGUARD_CA_FINGERPRINT", "MESHGUARD_TOKEN_FILE", "MESHGUARD_SERVICE", "MESHGUARD_APP", "MESHGUARD_POLICY", "MESHGUARD_DATA_DIR"} {
			if _, ok := env[name]; !ok {
				t.Errorf("deployment %s: agent lacks %s", d.Name, name)
			}
		}
		if app := env["MESHGUARD_APP"].Value; !strings.HasPrefix(app, "127.0.0.1:") {
			t.Errorf("deployment %s: MESHGUARD_APP=%q must be on loopback so only the agent reaches the app", d.Name, app)
		}
		probe := func(kind string, p *corev1.Probe, path string) {
			if p == nil || p.HTTPGet == nil {
				t.Errorf("deployment %s: agent has no HTTP %s probe", d.Name, kind)
				return
			}
			if p.HTTPGet.Path != path || p.HTTPGet.Port.String() != "admin" {
				t.Errorf("deployment %s: %s probe is %s on port %s, want %s on admin", d.Name, kind, p.HTTPGet.Path, p.HTTPGet.Port.String(), path)
			}
		}
		probe("readiness", agent.ReadinessProbe, "/readyz")
		probe("liveness", agent.LivenessProbe, "/healthz")
		if ref := env["MESHGUARD_CA_FINGERPRINT"].ValueFrom; ref == nil || ref.ConfigMapKeyRef == nil {
			t.Errorf("deployment %s: the CA fingerprint should come from a ConfigMap", d.Name)
		} else if _, ok := objs.configMaps[ref.ConfigMapKeyRef.Name]; !ok {
			t.Errorf("deployment %s: ConfigMap %q is not defined", d.Name, ref.ConfigMapKeyRef.Name)
		}
		for _, v := range spec.Volumes {
			if v.Secret != nil {
				if _, ok := objs.secrets[v.Secret.SecretName]; !ok {
					t.Errorf("deployment %s: Secret %q is not defined", d.Name, v.Secret.SecretName)
				}
			}
			if v.ConfigMap != nil {
				if _, ok := objs.configMaps[v.ConfigMap.Name]; !ok {
					t.Errorf("deployment %s: ConfigMap %q is not defined", d.Name, v.ConfigMap.Name)
				}
			}
		}
	}
}

func TestKubernetesContainersAreHardened(t *testing.T) {
	objs := loadKubernetes(t)
	var pods []struct {
		owner string
		spec  corev1.PodSpec
	}
	for _, s := range objs.statefulSets {
		pods = append(pods, struct {
			owner string
			spec  corev1.PodSpec
		}{"statefulset/" + s.Name, s.Spec.Template.Spec})
	}
	for _, d := range objs.deployments {
		pods = append(pods, struct {
			owner string
			spec  corev1.PodSpec
		}{"deployment/" + d.Name, d.Spec.Template.Spec})
	}
	for _, p := range pods {
		if sc := p.spec.SecurityContext; sc == nil || sc.RunAsNonRoot == nil || !*sc.RunAsNonRoot {
			t.Errorf("%s: pod must set runAsNonRoot", p.owner)
		}
		if p.spec.AutomountServiceAccountToken == nil || *p.spec.AutomountServiceAccountToken {
			t.Errorf("%s: pod must not mount a service account token it does not use", p.owner)
		}
		all := append(append([]corev1.Container{}, p.spec.InitContainers...), p.spec.Containers...)
		for _, c := range all {
			sc := c.SecurityContext
			if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
				sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem ||
				sc.Capabilities == nil || len(sc.Capabilities.Drop) == 0 {
				t.Errorf("%s container %s: want allowPrivilegeEscalation=false, readOnlyRootFilesystem=true, capabilities dropped", p.owner, c.Name)
			}
		}
	}
}

// TestKubernetesPolicyMatchesShippedRules: the policy ConfigMap carries the
// shipped .rego files verbatim (rules and their tests), so a cluster runs
// exactly the rules this repository tests.
func TestKubernetesPolicyMatchesShippedRules(t *testing.T) {
	objs := loadKubernetes(t)
	cm, ok := objs.configMaps["meshguard-policy"]
	if !ok {
		t.Fatal("no meshguard-policy ConfigMap")
	}
	files, err := filepath.Glob(filepath.Join("..", "policies", "*.rego"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no shipped policies: %v", err)
	}
	for _, f := range files {
		want, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		got, ok := cm.Data[filepath.Base(f)]
		if !ok {
			t.Errorf("the ConfigMap lacks %s", filepath.Base(f))
			continue
		}
		if strings.TrimRight(got, "\n") != strings.TrimRight(string(want), "\n") {
			t.Errorf("the ConfigMap's %s differs from policies/%s: copy it again", filepath.Base(f), filepath.Base(f))
		}
	}
	if _, ok := cm.Data["data.json"]; !ok {
		t.Error("the ConfigMap has no data.json (the allow-list)")
	}
}
