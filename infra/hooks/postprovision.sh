#!/bin/sh
# azd postprovision hook: in secret mode, give the app a client secret by adding a password to the
# app registration and storing it in the vault, only when the vault has no such secret yet. Graph Bicep
# cannot create application passwords, so this is a script.
# https://learn.microsoft.com/graph/templates/limitations
# Outputs of infra/main.bicep reach this script as environment variables (azd stores them in .env).
# https://learn.microsoft.com/azure/developer/azure-developer-cli/azd-extensibility
set -eu

say() { printf 'graphusers postprovision: %s\n' "$*"; }

secret_name="${AZURE_KEY_VAULT_SECRET_NAME:-}"
vault="${AZURE_KEY_VAULT_NAME:-}"
client_id="${GRAPH_CLIENT_ID:-}"
if [ -z "$secret_name" ] || [ -z "$vault" ]; then
  say "GRAPH_CREDENTIAL is ${GRAPH_CREDENTIAL:-secret}, not secret: no client secret to create"
  exit 0
fi
if [ -z "$client_id" ]; then
  say "error: GRAPH_CLIENT_ID is empty; set it (azd env set GRAPH_CLIENT_ID <application id>) or let the template create the app registration" >&2
  exit 1
fi

if ! command -v az >/dev/null 2>&1; then
  say "error: the Azure CLI (az) is required to create the client secret; install it, az login, then azd provision" >&2
  exit 1
fi

# The deployer's Key Vault Secrets Officer role was assigned moments ago; Azure RBAC can take a few
# minutes to apply, during which the vault answers 403 (Forbidden). Wait for it, up to ~5 minutes.
# https://learn.microsoft.com/azure/role-based-access-control/troubleshooting#symptom---role-assignment-changes-are-not-being-detected
attempt=1
while :; do
  if out="$(az keyvault secret show --vault-name "$vault" --name "$secret_name" --query id -o tsv 2>&1)"; then
    say "secret $secret_name already exists in Key Vault $vault; leaving it (rotate it as the README describes)"
    exit 0
  fi
  case "$out" in
    *SecretNotFound*|*"not found"*) break ;;
  esac
  if [ "$attempt" -ge "${GRAPHUSERS_HOOK_ATTEMPTS:-10}" ]; then
    say "error: cannot read Key Vault $vault: $out" >&2
    say "Your account needs Key Vault Secrets Officer on the vault (deployerPrincipalId / AZURE_PRINCIPAL_ID); role changes can take minutes. Run azd provision again later." >&2
    exit 1
  fi
  say "Key Vault $vault is not readable yet (role assignments still propagating?); retrying in 30 s ($attempt)"
  sleep "${GRAPHUSERS_HOOK_DELAY:-30}"
  attempt=$((attempt + 1))
done

if [ "${GRAPHUSERS_CREATE_APP_REGISTRATION:-true}" != "true" ]; then
  say "secret $secret_name is missing from Key Vault $vault, and the app registration $client_id was not made by this template,"
  say "so this hook does not add a password to it. Store its client secret yourself:"
  say "  az keyvault secret set --vault-name $vault --name $secret_name --file <file holding the secret value>"
  exit 0
fi

say "secret $secret_name is missing: adding a password (valid 1 year) to app registration $client_id and storing it in Key Vault $vault"
umask 077
raw="$(mktemp)"
tmp="$(mktemp)"
trap 'rm -f "$raw" "$tmp"' EXIT INT TERM
# The password goes from az's output to a private temporary file and from there to the vault; it is
# never printed and never passed on a command line.
az ad app credential reset --id "$client_id" --append --display-name "graphusers (azd postprovision)" \
  --years 1 --query password -o tsv > "$raw"
# -o tsv ends the value with a newline, which --file would store as part of the secret.
tr -d '\r\n' < "$raw" > "$tmp"
if [ ! -s "$tmp" ]; then
  say "error: az ad app credential reset returned no password" >&2
  exit 1
fi
az keyvault secret set --vault-name "$vault" --name "$secret_name" --file "$tmp" --encoding utf-8 \
  --content-type "client secret of $client_id" --query id -o tsv >/dev/null
say "stored secret $secret_name in Key Vault $vault; the app reads it on its next token request (no restart)"
