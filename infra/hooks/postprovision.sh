#!/bin/sh
# azd postprovision hook: in secret mode, give the app a client secret by adding a password to the
# app registration and storing it in the vault, only when the vault has no such secret yet. Graph Bicep
# cannot create application passwords, so this is a script.
# https://learn.microsoft.com/graph/templates/limitations
# Outputs of infra/main.bicep reach this script as environment variables (azd stores them in .env).
# https://learn.microsoft.com/azure/developer/azure-developer-cli/azd-extensibility
#
# Private layout (AZURE_VNET_ENABLED=true): the vault takes no public traffic, so the hook opens it to
# this machine's public IPv4 address only (public access on, the firewall still denying by default, one
# IP rule), does its work, and removes the rule and turns public access off again on every exit. A
# redeployment closes it too (the template sets publicNetworkAccess Disabled). The rule admits one
# address, and every call still needs Entra ID and a data-plane role.
# https://learn.microsoft.com/azure/key-vault/general/network-security
#   GRAPHUSERS_DEPLOYER_IP  the address to admit (Azure's view of it, e.g. behind a NAT or proxy);
#                           unset: taken from the vault's own refusal, which names the caller's address
#   GRAPHUSERS_OPEN_VAULT   false: do not open the vault (run from inside the network, or where a policy
#                           forbids public access even briefly)
set -eu

say() { printf 'graphusers postprovision: %s\n' "$*"; }

vault_rule=""    # the IP rule this run added, removed again on exit
vault_opened=""  # set once this run turned the vault's public access on
raw=""
tmp=""
cleanup() {
  rm -f "$raw" "$tmp"
  if [ -n "$vault_rule" ]; then
    # shellcheck disable=SC2086 # $rg is empty or two words on purpose
    if az keyvault network-rule remove --name "$vault" $rg --ip-address "$vault_rule" -o none >/dev/null 2>&1; then
      say "removed the temporary rule for $vault_rule from Key Vault $vault"
    else
      say "warning: could not remove the rule for $vault_rule: az keyvault network-rule remove --name $vault --ip-address $vault_rule" >&2
    fi
  fi
  if [ -n "$vault_opened" ]; then
    # shellcheck disable=SC2086
    if az keyvault update --name "$vault" $rg --public-network-access Disabled -o none >/dev/null 2>&1; then
      say "Key Vault $vault takes no public traffic again"
    else
      say "error: could not turn Key Vault $vault's public access off again; do it: az keyvault update --name $vault --public-network-access Disabled (or azd provision)" >&2
      # Fail the hook, so that azd reports it rather than a success with a vault left open.
      trap - EXIT
      exit 1
    fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

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

rg=""
if [ -n "${AZURE_RESOURCE_GROUP:-}" ]; then
  rg="--resource-group ${AZURE_RESOURCE_GROUP}"
fi
private=""
case "${AZURE_VNET_ENABLED:-false}" in
  true | True | TRUE) private=yes ;;
esac

if [ -n "$private" ] && [ "${GRAPHUSERS_OPEN_VAULT:-true}" != "false" ]; then
  say "Key Vault $vault takes no public traffic (vnetEnabled); opening it to this machine's address only while this hook runs"
  # shellcheck disable=SC2086
  if ! out="$(az keyvault update --name "$vault" $rg --public-network-access Enabled --default-action Deny -o none 2>&1)"; then
    say "error: cannot open Key Vault $vault to this machine: $out" >&2
    say "Store the secret from inside the network, or as the deploy guide's private-layout steps say; then set GRAPHUSERS_OPEN_VAULT=false." >&2
    exit 1
  fi
  vault_opened=yes
  ip="${GRAPHUSERS_DEPLOYER_IP:-}"
  attempt=1
  while [ -z "$ip" ]; do
    # With public access on and no rule, the vault's refusal (ForbiddenByFirewall) names the caller's
    # address: "Client address: 203.0.113.7". Until the change applies it answers differently; retry.
    if out="$(az keyvault secret show --vault-name "$vault" --name "$secret_name" --query id -o tsv 2>&1)"; then
      break
    fi
    ip="$(printf '%s\n' "$out" | sed -n 's/.*Client address: \([0-9]\{1,3\}\(\.[0-9]\{1,3\}\)\{3\}\).*/\1/p' | head -n 1)"
    case "$out" in
      # Past the firewall already (a rule from before, or inside the network): no rule needed.
      *SecretNotFound* | *"Caller is not authorized to perform action"*) break ;;
      *"Client address:"*)
        if [ -z "$ip" ]; then
          # Key Vault's IP rules take IPv4 addresses only.
          say "error: Key Vault $vault sees this machine at an address its firewall cannot admit: $out" >&2
          say "Set GRAPHUSERS_DEPLOYER_IP to your public IPv4 address (azd env set GRAPHUSERS_DEPLOYER_IP <address>), or run from inside the network with GRAPHUSERS_OPEN_VAULT=false." >&2
          exit 1
        fi
        ;;
    esac
    if [ -z "$ip" ]; then
      if [ "$attempt" -ge "${GRAPHUSERS_HOOK_ATTEMPTS:-10}" ]; then
        say "error: Key Vault $vault did not name this machine's address: $out" >&2
        say "Set GRAPHUSERS_DEPLOYER_IP to your public IPv4 address as Azure sees it (azd env set GRAPHUSERS_DEPLOYER_IP <address>) and run azd provision again." >&2
        exit 1
      fi
      say "waiting for Key Vault $vault's network change to apply; retrying in ${GRAPHUSERS_HOOK_DELAY:-30} s ($attempt)"
      sleep "${GRAPHUSERS_HOOK_DELAY:-30}"
      attempt=$((attempt + 1))
    fi
  done
  if [ -n "$ip" ]; then
    case "$ip" in
      */*) rule="$ip" ;;
      *) rule="$ip/32" ;;
    esac
    # shellcheck disable=SC2086
    if ! out="$(az keyvault network-rule add --name "$vault" $rg --ip-address "$rule" -o none 2>&1)"; then
      say "error: cannot add a rule for $rule to Key Vault $vault: $out" >&2
      exit 1
    fi
    vault_rule="$rule"
    say "admitted $rule to Key Vault $vault until this hook ends"
  fi
fi

# The deployer's Key Vault Secrets Officer role was assigned moments ago; Azure RBAC can take a few
# minutes to apply, during which the vault answers 403 (Forbidden). Wait for it, up to ~5 minutes.
# https://learn.microsoft.com/azure/role-based-access-control/troubleshooting#symptom---role-assignment-changes-are-not-being-detected
attempt=1
while :; do
  if out="$(az keyvault secret show --vault-name "$vault" --name "$secret_name" --query id -o tsv 2>&1)"; then
    say "secret $secret_name already exists in Key Vault $vault; leaving it (rotate it as docs/deploy.md describes)"
    exit 0
  fi
  case "$out" in
    *SecretNotFound*|*"not found"*) break ;;
    *"Public network access is disabled"*)
      if [ -z "$vault_opened" ]; then
        say "error: Key Vault $vault takes no public traffic (the private layout): $out" >&2
        say "Run this hook with AZURE_VNET_ENABLED=true so it opens the vault to this machine while it runs, or from inside the network." >&2
        exit 1
      fi
      ;;
  esac
  if [ "$attempt" -ge "${GRAPHUSERS_HOOK_ATTEMPTS:-10}" ]; then
    say "error: cannot read Key Vault $vault: $out" >&2
    case "$out" in
      *"Client address:"*)
        say "The vault's firewall refuses this machine's address: GRAPHUSERS_DEPLOYER_IP (${GRAPHUSERS_DEPLOYER_IP:-unset}) is not the address Azure sees, or the rule has not applied yet. Run azd provision again." >&2
        ;;
      *)
        say "Your account needs Key Vault Secrets Officer on the vault (deployerPrincipalId / AZURE_PRINCIPAL_ID); role changes can take minutes. Run azd provision again later." >&2
        ;;
    esac
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
  if [ -n "$private" ]; then
    say "The vault takes no public traffic: run that from inside the network, or open it to your address first (deploy guide, private layout)."
  fi
  exit 0
fi

say "secret $secret_name is missing: adding a password (valid 1 year) to app registration $client_id and storing it in Key Vault $vault"
umask 077
raw="$(mktemp)"
tmp="$(mktemp)"
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
