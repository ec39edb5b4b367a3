#!/usr/bin/env bash
# azd postdeploy hook: subscribe the deployed functions to Event Grid.
#
# Why after deployment: a webhook subscription carries a function's system key (blobs_extension,
# eventgrid_extension), and those keys exist only once the code is deployed and its functions are indexed.
# Event Grid also validates the webhook when the subscription is created, so the function must answer.
#
# Idempotent: `event-subscription create` creates or updates. Run it again any time:
#   ./scripts/post-deploy.sh
set -euo pipefail

values="$(azd env get-values)"

# azd_value NAME: one value from the azd environment, or a clear error.
azd_value() {
  local value
  value="$(printf '%s\n' "$values" | sed -n "s/^$1=\"\{0,1\}\([^\"]*\)\"\{0,1\}$/\1/p" | head -n 1)"
  if [ -z "$value" ]; then
    echo "error: $1 is not set in the azd environment; run 'azd provision' first." >&2
    exit 1
  fi
  printf '%s' "$value"
}

subscription="$(azd_value AZURE_SUBSCRIPTION_ID)"
app_group="$(azd_value AZURE_RESOURCE_GROUP)"
app_name="$(azd_value AZURE_FUNCTION_APP_NAME)"
app_host="$(azd_value AZURE_FUNCTION_APP_HOSTNAME)"
storage_id="$(azd_value STORAGE_ACCOUNT_ID)"
storage_topic="$(azd_value STORAGE_TOPIC_NAME)"
datasets="$(azd_value DATASETS_CONTAINER)"
deadletter="$(azd_value DEADLETTER_CONTAINER)"
workspace_group="$(azd_value WORKSPACE_RESOURCE_GROUP)"
workspace_topic="$(azd_value WORKSPACE_TOPIC_NAME)"

deadletter_endpoint="$storage_id/blobServices/default/containers/$deadletter"

attempts="${POST_DEPLOY_KEY_ATTEMPTS:-8}"
wait_s="${POST_DEPLOY_KEY_WAIT_S:-15}"

# system_key NAME: the function app's system key, waiting (8 x 15 s by default) for the host to index.
system_key() {
  local key="" attempt
  for attempt in $(seq 1 "$attempts"); do
    key="$(az functionapp keys list --subscription "$subscription" -g "$app_group" -n "$app_name" \
      --query "systemKeys.$1" -o tsv || true)"
    if [ -n "$key" ]; then
      printf '%s' "$key"
      return 0
    fi
    if [ "$attempt" -lt "$attempts" ]; then
      echo "  waiting for system key $1 (attempt $attempt/$attempts)..." >&2
      sleep "$wait_s"
    fi
  done
  echo "error: the function app $app_name has no system key $1." >&2
  echo "  Its functions are not indexed yet (or failed to index): check the app's logs in Application" >&2
  echo "  Insights, then run scripts/post-deploy.sh again." >&2
  exit 1
}

echo "Subscribing functions of $app_name to Event Grid"

echo "- reading the blobs_extension system key"
blobs_key="$(system_key blobs_extension)"
echo "- storage topic $storage_topic -> on_dataset_uploaded (container $datasets)"
az eventgrid system-topic event-subscription create \
  --subscription "$subscription" \
  --resource-group "$app_group" \
  --system-topic-name "$storage_topic" \
  --name datasets-to-on-dataset-uploaded \
  --endpoint-type webhook \
  --endpoint "https://$app_host/runtime/webhooks/blobs?functionName=Host.Functions.on_dataset_uploaded&code=$blobs_key" \
  --included-event-types Microsoft.Storage.BlobCreated \
  --subject-begins-with "/blobServices/default/containers/$datasets/" \
  --deadletter-endpoint "$deadletter_endpoint" \
  --max-delivery-attempts 30 \
  --event-ttl 1440 \
  --output none

echo "- reading the eventgrid_extension system key"
eventgrid_key="$(system_key eventgrid_extension)"
echo "- workspace topic $workspace_topic -> on_job_event (pipeline jobs)"
az eventgrid system-topic event-subscription create \
  --subscription "$subscription" \
  --resource-group "$workspace_group" \
  --system-topic-name "$workspace_topic" \
  --name jobs-to-on-job-event \
  --endpoint-type webhook \
  --endpoint "https://$app_host/runtime/webhooks/eventgrid?functionName=on_job_event&code=$eventgrid_key" \
  --included-event-types Microsoft.MachineLearningServices.RunCompleted Microsoft.MachineLearningServices.RunStatusChanged \
  --advanced-filter data.runType StringIn azureml.PipelineRun \
  --deadletter-endpoint "$deadletter_endpoint" \
  --max-delivery-attempts 30 \
  --event-ttl 1440 \
  --output none

echo "Done: uploads to container '$datasets' start runs; Azure ML job events reach on_job_event."
echo "Undeliverable events land in container '$deadletter'."
