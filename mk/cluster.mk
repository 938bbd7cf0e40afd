# scenebench on Kubernetes: the image, a local kind cluster with Argo Workflows and MinIO,
# submitting runs and installing the nightly. Included by the Makefile; see CLUSTER.md.

# --- Pinned versions: the only place they are written -------------------------------
KIND_VERSION    ?= v0.33.0
# kind only supports node images built for its release: pin by the digest its notes list.
KIND_NODE_IMAGE ?= kindest/node:v1.36.4@sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed
ARGO_VERSION    ?= v4.1.5
ARGO_INSTALL_URL = https://github.com/argoproj/argo-workflows/releases/download/$(ARGO_VERSION)/install.yaml
KIND_URL         = https://github.com/kubernetes-sigs/kind/releases/download/$(KIND_VERSION)/kind-$(HOST_OS)-$(HOST_ARCH)
# The argo CLI of the same release. Its assets are argo-<os>-<arch>.gz, with one
# argo-workflows-cli-checksums.txt ("<sha256>  argo-<os>-<arch>.gz" lines) beside them.
ARGO_RELEASE_URL = https://github.com/argoproj/argo-workflows/releases/download/$(ARGO_VERSION)

# --- Knobs ----------------------------------------------------------------------------
KIND_CLUSTER    ?= scenebench
NAMESPACE       ?= scenebench
OVERLAY         ?= kind
VARIANT         ?= cpu
SCENEBENCH_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
# Images are tagged with the commit they are built from ("-dirty" when the tree has changes),
# so that a tag names one build of the code; the package version names many.
GIT_SHA         := $(shell git rev-parse --short=12 HEAD 2>/dev/null)
GIT_DIRTY       := $(shell test -n "$$(git status --porcelain 2>/dev/null)" && echo -dirty)
IMAGE_NAME      ?= scenebench
IMAGE_TAG       ?= $(if $(GIT_SHA),$(GIT_SHA)$(GIT_DIRTY),no-git)-$(VARIANT)
IMAGE           ?= $(IMAGE_NAME):$(IMAGE_TAG)
# TensorFlow 2.21 and ai-edge-litert 2.3.0 publish no Linux aarch64 wheels: the image is
# linux/amd64 everywhere (emulated on Apple Silicon, see CLUSTER.md).
IMAGE_PLATFORM  ?= linux/amd64
DOCKER          ?= docker
KUBECTL         ?= kubectl
MINIO_LOCAL_PORT ?= 19000
SUBMIT_ARGS     ?=
RUN             ?=
RUN_A           ?=
RUN_B           ?=
# The smoke run of `make local-kind`: the smallest architecture, one epoch, tiny images.
SMOKE_ARCH      ?= mobilenet_v2
SMOKE_RUN       ?= smoke-$(shell date -u +%Y%m%d-%H%M%S)
SMOKE_TIMEOUT_S ?= 3600

HOST_OS   := $(shell uname -s | tr '[:upper:]' '[:lower:]')
HOST_ARCH := $(shell uname -m | sed -e 's/x86_64/amd64/' -e 's/aarch64/arm64/')
BIN_DIR   := bin
KIND      := $(BIN_DIR)/kind-$(KIND_VERSION)
ARGO      := $(BIN_DIR)/argo-$(ARGO_VERSION)
# manifests/overlays/kind with the image just built, written by `make kind-overlay`
# (kustomize takes only relative paths: the overlay refers to ../../manifests/).
KIND_OVERLAY := $(BIN_DIR)/kind-overlay
# Every local-kind command names the kind context, so that it can never touch another cluster.
KIND_KUBECTL = $(KUBECTL) --context kind-$(KIND_CLUSTER)

.PHONY: image image-push local-kind kind-cluster kind-load argo-install argo-cli kind-overlay kind-apply \
	kind-wait kind-smoke kind-leaderboard kind-down submit nightly-install cluster-apply leaderboard compare console

image: ## Build the image for every job (VARIANT=cpu|gpu) for linux/amd64, tagged scenebench:<git sha>-<variant>
	@case "$(IMAGE)" in *:no-git-*) echo "error: not a git checkout, so there is no commit to tag the image with;" \
		"give one: make image IMAGE=name:tag" >&2; exit 2;; esac
	$(DOCKER) build --platform $(IMAGE_PLATFORM) --build-arg VARIANT=$(VARIANT) \
		--build-arg CODE_VERSION=$$(git describe --always --dirty --tags 2>/dev/null || echo $(SCENEBENCH_VERSION)) \
		--build-arg GIT_SHA=$(GIT_SHA)$(GIT_DIRTY) \
		-t $(IMAGE) .

image-push: ## Push IMAGE to its registry (make image image-push IMAGE_NAME=registry.example.com/scenebench)
	$(DOCKER) push $(IMAGE)

# kind is fetched into ./bin at the pinned version and checked against its published sha256.
$(KIND):
	mkdir -p $(BIN_DIR)
	curl -fsSL -o $(BIN_DIR)/kind-$(HOST_OS)-$(HOST_ARCH) $(KIND_URL)
	curl -fsSL -o $(BIN_DIR)/kind-$(HOST_OS)-$(HOST_ARCH).sha256sum $(KIND_URL).sha256sum
	cd $(BIN_DIR) && { sha256sum -c kind-$(HOST_OS)-$(HOST_ARCH).sha256sum 2>/dev/null \
		|| shasum -a 256 -c kind-$(HOST_OS)-$(HOST_ARCH).sha256sum; }
	chmod +x $(BIN_DIR)/kind-$(HOST_OS)-$(HOST_ARCH)
	mv $(BIN_DIR)/kind-$(HOST_OS)-$(HOST_ARCH) $@
	rm -f $(BIN_DIR)/kind-$(HOST_OS)-$(HOST_ARCH).sha256sum

# The argo CLI, fetched into ./bin at the pinned version and checked against the sha256 the
# release publishes for it.
$(ARGO):
	mkdir -p $(BIN_DIR)
	curl -fsSL -o $(BIN_DIR)/argo-$(HOST_OS)-$(HOST_ARCH).gz $(ARGO_RELEASE_URL)/argo-$(HOST_OS)-$(HOST_ARCH).gz
	curl -fsSL -o $(BIN_DIR)/argo-workflows-cli-checksums.txt $(ARGO_RELEASE_URL)/argo-workflows-cli-checksums.txt
	cd $(BIN_DIR) && grep ' argo-$(HOST_OS)-$(HOST_ARCH)\.gz$$' argo-workflows-cli-checksums.txt > argo.sha256 \
		&& { sha256sum -c argo.sha256 2>/dev/null || shasum -a 256 -c argo.sha256; }
	gunzip -f $(BIN_DIR)/argo-$(HOST_OS)-$(HOST_ARCH).gz
	chmod +x $(BIN_DIR)/argo-$(HOST_OS)-$(HOST_ARCH)
	mv $(BIN_DIR)/argo-$(HOST_OS)-$(HOST_ARCH) $@
	rm -f $(BIN_DIR)/argo-workflows-cli-checksums.txt $(BIN_DIR)/argo.sha256

argo-cli: $(ARGO) ## Install the pinned argo CLI as bin/argo-<version> (sha256 checked)
	@echo "$(ARGO)"

# Each step is its own make call so that `make -j` can not reorder them; SMOKE_RUN is
# passed down so that the run submitted is the run whose leaderboard is printed.
local-kind: install-cluster ## Create (or reuse) a kind cluster with Argo, MinIO and a runner; run a smoke run; print its leaderboard
	$(MAKE) --no-print-directory kind-cluster
	$(MAKE) --no-print-directory image VARIANT=cpu
	$(MAKE) --no-print-directory kind-load VARIANT=cpu
	$(MAKE) --no-print-directory argo-install KUBECTL="$(KIND_KUBECTL)"
	$(MAKE) --no-print-directory kind-apply VARIANT=cpu
	$(MAKE) --no-print-directory kind-wait
	$(MAKE) --no-print-directory kind-smoke VARIANT=cpu SMOKE_RUN=$(SMOKE_RUN)
	$(MAKE) --no-print-directory kind-leaderboard RUN=$(SMOKE_RUN)

kind-cluster: $(KIND) ## Create the kind cluster (KIND_CLUSTER=scenebench) unless it exists
	@$(DOCKER) info >/dev/null 2>&1 || { echo "kind needs a running Docker engine ($(DOCKER) info failed)"; exit 1; }
	@if $(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)'; then echo "kind cluster $(KIND_CLUSTER) exists"; else \
		previous=$$($(KUBECTL) config current-context 2>/dev/null || true); \
		$(KIND) create cluster --name $(KIND_CLUSTER) --image $(KIND_NODE_IMAGE) --wait 180s || exit 1; \
		echo "note: kind made kind-$(KIND_CLUSTER) kubectl's current context$${previous:+ (it was $$previous: kubectl config use-context $$previous)}"; \
	fi

# Through an archive of the one platform built: `kind load docker-image` fails with "content
# digest ... not found" under Docker's containerd image store (the default of Docker Desktop
# and Docker 29), which exports index entries for platforms it does not hold (kind#3795).
# The archive is streamed, never written to disk; /dev/stdin serves the one node of this cluster.
kind-load: $(KIND) ## Copy the locally built image onto the kind node (docker save --platform | kind load image-archive)
	set -o pipefail; $(DOCKER) save --platform $(IMAGE_PLATFORM) $(IMAGE) \
		| $(KIND) load image-archive /dev/stdin --name $(KIND_CLUSTER)

argo-install: ## Install the pinned Argo Workflows release into the current kubectl context (namespace argo)
	$(KUBECTL) create namespace argo --dry-run=client -o yaml | $(KUBECTL) apply -f -
	$(KUBECTL) apply --server-side --force-conflicts -n argo -f $(ARGO_INSTALL_URL)
	$(KUBECTL) wait --for=condition=established --timeout=120s \
		crd/workflows.argoproj.io crd/workflowtemplates.argoproj.io crd/cronworkflows.argoproj.io \
		crd/workflowtaskresults.argoproj.io
	$(KUBECTL) -n argo rollout status deployment/workflow-controller --timeout=300s

# The kind overlay with IMAGE in the runner and as the template's default image, so that a
# run submitted by any means (jobs.submit, argo submit, the UI) runs the image just loaded.
kind-overlay: ## Write bin/kind-overlay: manifests/overlays/kind running IMAGE
	mkdir -p $(KIND_OVERLAY)
	printf '%s\n' \
		'# Written by `make kind-overlay`: manifests/overlays/kind running $(IMAGE).' \
		'apiVersion: kustomize.config.k8s.io/v1beta1' \
		'kind: Kustomization' \
		'resources:' \
		'  - ../../manifests/overlays/kind' \
		'images:' \
		'  - {name: scenebench, newName: "$(IMAGE_NAME)", newTag: "$(IMAGE_TAG)"}' \
		'patches:' \
		'  - target: {kind: WorkflowTemplate, name: scenebench}' \
		'    patch: |-' \
		'      - {op: test, path: /spec/arguments/parameters/14/name, value: image}' \
		'      - {op: replace, path: /spec/arguments/parameters/14/value, value: "$(IMAGE)"}' \
		> $(KIND_OVERLAY)/kustomization.yaml

kind-apply: kind-overlay
	$(KIND_KUBECTL) apply -k $(KIND_OVERLAY)

kind-wait:
	$(KIND_KUBECTL) -n $(NAMESPACE) rollout status deployment/minio --timeout=300s
	$(KIND_KUBECTL) -n $(NAMESPACE) rollout status deployment/scenebench-runner --timeout=300s
	$(KIND_KUBECTL) -n $(NAMESPACE) wait --for=condition=complete job/minio-create-bucket --timeout=300s

kind-smoke:
	$(CLUSTER_PY) -m jobs.submit --context kind-$(KIND_CLUSTER) --namespace $(NAMESPACE) --name $(SMOKE_RUN) \
		--timeout-s $(SMOKE_TIMEOUT_S) -p image=$(IMAGE) \
		-p archs='["$(SMOKE_ARCH)"]' -p formats=float32,int8 -p data=synthetic -p epochs=1 \
		-p image-size=64x96 -p weights=none -p num-runs=5 -p warmup-runs=1

kind-leaderboard:
	$(MAKE) --no-print-directory leaderboard KUBECTL="$(KIND_KUBECTL)" RUN=$(RUN)
	@echo
	@echo "Browse the artifacts in the MinIO console: make console KUBECTL=\"$(KIND_KUBECTL)\""
	@echo "then open http://localhost:9001 and log in with the dev credentials:"
	@echo "  $(KIND_KUBECTL) -n $(NAMESPACE) get secret scenebench-s3 -o jsonpath='{.data.AWS_ACCESS_KEY_ID}' | base64 -d"
	@echo "  $(KIND_KUBECTL) -n $(NAMESPACE) get secret scenebench-s3 -o jsonpath='{.data.AWS_SECRET_ACCESS_KEY}' | base64 -d"

kind-down: $(KIND) ## Delete the kind cluster and everything in it
	$(KIND) delete cluster --name $(KIND_CLUSTER)

cluster-apply: ## Apply manifests/overlays/OVERLAY (kind|gpu: MinIO, RBAC, Argo template) to the current kubectl context
	$(KUBECTL) apply -k manifests/overlays/$(OVERLAY)

submit: install-cluster ## Submit a run from the WorkflowTemplate and wait for it (SUBMIT_ARGS="-p archs=all -p epochs=30")
	$(CLUSTER_PY) -m jobs.submit --namespace $(NAMESPACE) $(SUBMIT_ARGS)

nightly-install: ## Install the scenebench-nightly CronWorkflow (all architectures, every night)
	$(KUBECTL) -n $(NAMESPACE) apply -f argo/cronworkflow.yaml
	$(KUBECTL) -n $(NAMESPACE) get cronworkflow scenebench-nightly

# The store is reached through a port-forward, with the credentials read from the cluster's
# Secret at run time, so that no credential is written in this file. $(call with_store,CMD)
# runs CMD (a scenebench command of the cluster venv) against the cluster's MinIO.
define with_store
$(KUBECTL) -n $(NAMESPACE) port-forward svc/minio $(MINIO_LOCAL_PORT):9000 >/dev/null & pf=$$!; \
	trap 'kill $$pf 2>/dev/null' EXIT; \
	for _ in $$(seq 30); do (echo >/dev/tcp/127.0.0.1/$(MINIO_LOCAL_PORT)) 2>/dev/null && break; sleep 1; done; \
	secret() { $(KUBECTL) -n $(NAMESPACE) get secret scenebench-s3 -o jsonpath="{.data.$$1}" | base64 -d; }; \
	SCENEBENCH_S3_ENDPOINT=http://127.0.0.1:$(MINIO_LOCAL_PORT) \
	AWS_ACCESS_KEY_ID="$$(secret AWS_ACCESS_KEY_ID)" AWS_SECRET_ACCESS_KEY="$$(secret AWS_SECRET_ACCESS_KEY)" \
	SCENEBENCH_STORE=s3://scenebench/ $(CLUSTER_PY) $(1)
endef

leaderboard: install-cluster ## Print a run's leaderboard.md from the cluster's MinIO (RUN=<workflow name>)
	@test -n "$(RUN)" || { echo "RUN=<workflow name> is required"; exit 2; }
	@$(call with_store,-m jobs.artifacts cat runs/$(RUN)/leaderboard.md)

compare: install-cluster ## Print what changed between two runs in the cluster's MinIO (RUN_A=<baseline> RUN_B=<run>)
	@test -n "$(RUN_A)" -a -n "$(RUN_B)" || { echo "RUN_A=<baseline run> RUN_B=<run> are required"; exit 2; }
	@$(call with_store,-m jobs.compare --store s3://scenebench/ $(RUN_A) $(RUN_B))

console: ## Forward the MinIO console to http://localhost:9001 (Ctrl-C to stop)
	$(KUBECTL) -n $(NAMESPACE) port-forward svc/minio 9001:9001
