# scenebench on Kubernetes: the image, a local kind cluster with Argo Workflows and MinIO,
# submitting runs and installing the nightly. Included by the Makefile; see CLUSTER.md.

# --- Pinned versions: the only place they are written -------------------------------
KIND_VERSION    ?= v0.33.0
# kind only supports node images built for its release: pin by the digest its notes list.
KIND_NODE_IMAGE ?= kindest/node:v1.36.4@sha256:099e049362a1526b2db71494e1947aae99bd16290d7c895f2b7ea312e3cbfaed
ARGO_VERSION    ?= v4.1.5
ARGO_INSTALL_URL = https://github.com/argoproj/argo-workflows/releases/download/$(ARGO_VERSION)/install.yaml
KIND_URL         = https://github.com/kubernetes-sigs/kind/releases/download/$(KIND_VERSION)/kind-$(HOST_OS)-$(HOST_ARCH)

# --- Knobs ----------------------------------------------------------------------------
KIND_CLUSTER    ?= scenebench
NAMESPACE       ?= scenebench
OVERLAY         ?= kind
VARIANT         ?= cpu
SCENEBENCH_VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml)
IMAGE           ?= scenebench:$(SCENEBENCH_VERSION)-$(VARIANT)
DOCKER          ?= docker
KUBECTL         ?= kubectl
MINIO_LOCAL_PORT ?= 19000
SUBMIT_ARGS     ?=
RUN             ?=
# The smoke run of `make local-kind`: the smallest architecture, one epoch, tiny images.
SMOKE_ARCH      ?= mobilenet_v2
SMOKE_RUN       ?= smoke-$(shell date -u +%Y%m%d-%H%M%S)
SMOKE_TIMEOUT_S ?= 3600

HOST_OS   := $(shell uname -s | tr '[:upper:]' '[:lower:]')
HOST_ARCH := $(shell uname -m | sed -e 's/x86_64/amd64/' -e 's/aarch64/arm64/')
BIN_DIR   := bin
KIND      := $(BIN_DIR)/kind-$(KIND_VERSION)
# Every local-kind command names the kind context, so that it can never touch another cluster.
KIND_KUBECTL = $(KUBECTL) --context kind-$(KIND_CLUSTER)

.PHONY: image local-kind kind-cluster kind-load argo-install kind-apply kind-wait kind-smoke \
	kind-leaderboard kind-down submit nightly-install cluster-apply leaderboard console

image: ## Build the image for every job (VARIANT=cpu|gpu), tagged scenebench:<version>-<variant>
	$(DOCKER) build --build-arg VARIANT=$(VARIANT) \
		--build-arg CODE_VERSION=$$(git describe --always --dirty --tags 2>/dev/null || echo $(SCENEBENCH_VERSION)) \
		-t $(IMAGE) .

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

# Each step is its own make call so that `make -j` can not reorder them; SMOKE_RUN is
# passed down so that the run submitted is the run whose leaderboard is printed.
local-kind: install ## Create (or reuse) a kind cluster with Argo, MinIO and a runner; run a smoke run; print its leaderboard
	$(MAKE) --no-print-directory kind-cluster
	$(MAKE) --no-print-directory image VARIANT=cpu
	$(MAKE) --no-print-directory kind-load VARIANT=cpu
	$(MAKE) --no-print-directory argo-install KUBECTL="$(KIND_KUBECTL)"
	$(MAKE) --no-print-directory kind-apply
	$(MAKE) --no-print-directory kind-wait
	$(MAKE) --no-print-directory kind-smoke SMOKE_RUN=$(SMOKE_RUN)
	$(MAKE) --no-print-directory kind-leaderboard RUN=$(SMOKE_RUN)

kind-cluster: $(KIND) ## Create the kind cluster (KIND_CLUSTER=scenebench) unless it exists
	@$(DOCKER) info >/dev/null 2>&1 || { echo "kind needs a running Docker engine ($(DOCKER) info failed)"; exit 1; }
	$(KIND) get clusters 2>/dev/null | grep -qx '$(KIND_CLUSTER)' \
		|| $(KIND) create cluster --name $(KIND_CLUSTER) --image $(KIND_NODE_IMAGE) --wait 180s

kind-load: $(KIND) ## Copy the locally built image onto the kind nodes
	$(KIND) load docker-image $(IMAGE) --name $(KIND_CLUSTER)

argo-install: ## Install the pinned Argo Workflows release into the current kubectl context (namespace argo)
	$(KUBECTL) create namespace argo --dry-run=client -o yaml | $(KUBECTL) apply -f -
	$(KUBECTL) apply --server-side --force-conflicts -n argo -f $(ARGO_INSTALL_URL)
	$(KUBECTL) wait --for=condition=established --timeout=120s \
		crd/workflows.argoproj.io crd/workflowtemplates.argoproj.io crd/cronworkflows.argoproj.io \
		crd/workflowtaskresults.argoproj.io
	$(KUBECTL) -n argo rollout status deployment/workflow-controller --timeout=300s

kind-apply:
	$(KIND_KUBECTL) apply -k manifests/overlays/kind

kind-wait:
	$(KIND_KUBECTL) -n $(NAMESPACE) rollout status deployment/minio --timeout=300s
	$(KIND_KUBECTL) -n $(NAMESPACE) rollout status deployment/scenebench-runner --timeout=300s
	$(KIND_KUBECTL) -n $(NAMESPACE) wait --for=condition=complete job/minio-create-bucket --timeout=300s

kind-smoke:
	$(PY) -m jobs.submit --context kind-$(KIND_CLUSTER) --namespace $(NAMESPACE) --name $(SMOKE_RUN) \
		--timeout-s $(SMOKE_TIMEOUT_S) \
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

submit: install ## Submit a run from the WorkflowTemplate and wait for it (SUBMIT_ARGS="-p archs=all -p epochs=30")
	$(PY) -m jobs.submit --namespace $(NAMESPACE) $(SUBMIT_ARGS)

nightly-install: ## Install the scenebench-nightly CronWorkflow (all architectures, every night)
	$(KUBECTL) -n $(NAMESPACE) apply -f argo/cronworkflow.yaml
	$(KUBECTL) -n $(NAMESPACE) get cronworkflow scenebench-nightly

# The store is reached through a port-forward, with the credentials read from the cluster's
# Secret at run time, so that no credential is written in this file.
leaderboard: install ## Print a run's leaderboard.md from the cluster's MinIO (RUN=<workflow name>)
	@test -n "$(RUN)" || { echo "RUN=<workflow name> is required"; exit 2; }
	@$(KUBECTL) -n $(NAMESPACE) port-forward svc/minio $(MINIO_LOCAL_PORT):9000 >/dev/null & pf=$$!; \
	trap 'kill $$pf 2>/dev/null' EXIT; \
	for _ in $$(seq 30); do (echo >/dev/tcp/127.0.0.1/$(MINIO_LOCAL_PORT)) 2>/dev/null && break; sleep 1; done; \
	secret() { $(KUBECTL) -n $(NAMESPACE) get secret scenebench-s3 -o jsonpath="{.data.$$1}" | base64 -d; }; \
	SCENEBENCH_S3_ENDPOINT=http://127.0.0.1:$(MINIO_LOCAL_PORT) \
	AWS_ACCESS_KEY_ID="$$(secret AWS_ACCESS_KEY_ID)" AWS_SECRET_ACCESS_KEY="$$(secret AWS_SECRET_ACCESS_KEY)" \
	SCENEBENCH_STORE=s3://scenebench/ $(PY) -m jobs.artifacts cat runs/$(RUN)/leaderboard.md

console: ## Forward the MinIO console to http://localhost:9001 (Ctrl-C to stop)
	$(KUBECTL) -n $(NAMESPACE) port-forward svc/minio 9001:9001
