#!/bin/sh
# azd preprovision hook: if the Key Vault this environment last deployed is soft-deleted (azd down,
# or its resource group deleted by hand), give the next vault a new name. Purge protection keeps a
# deleted vault's name taken for its retention period (90 days), and azd down --purge cannot purge it.
# https://learn.microsoft.com/azure/key-vault/general/soft-delete-overview#purge-protection
# azd runs hooks with the environment's values (.azure/<env>/.env) in the process environment.
# https://learn.microsoft.com/azure/developer/azure-developer-cli/azd-extensibility
set -eu

say() { printf 'graphusers preprovision: %s\n' "$*"; }

vault="${AZURE_KEY_VAULT_NAME:-}"
if [ -z "$vault" ]; then
  say "no Key Vault recorded in this environment yet; nothing to check"
  exit 0
fi
if ! command -v az >/dev/null 2>&1; then
  say "the Azure CLI (az) is not installed: cannot check whether Key Vault $vault is soft-deleted; provisioning as usual"
  exit 0
fi
subscription=""
if [ -n "${AZURE_SUBSCRIPTION_ID:-}" ]; then
  subscription="--subscription ${AZURE_SUBSCRIPTION_ID}"
fi

# shellcheck disable=SC2086 # $subscription is empty or two words on purpose
if az keyvault show --name "$vault" $subscription --query name -o tsv >/dev/null 2>&1; then
  say "Key Vault $vault exists; keeping its name"
  exit 0
fi
# shellcheck disable=SC2086
if az keyvault show-deleted --name "$vault" $subscription --query name -o tsv >/dev/null 2>&1; then
  seed="$(date -u +%Y%m%d%H%M%S)"
  azd env set GRAPHUSERS_KEY_VAULT_SEED "$seed"
  say "Key Vault $vault is soft-deleted and purge-protected, so its name stays taken for up to 90 days."
  say "Set GRAPHUSERS_KEY_VAULT_SEED=$seed: this deployment creates a vault with a new name, and the"
  say "postprovision hook stores a new client secret in it. If provisioning still reports the old name"
  say "as taken, run the same azd command again (older azd versions read the environment once)."
  exit 0
fi
say "Key Vault $vault was not found, deleted or not (or az is not signed in to subscription ${AZURE_SUBSCRIPTION_ID:-<default>}); provisioning as usual"
