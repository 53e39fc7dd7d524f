"""The properties of Microsoft Graph's ``user`` type (v1.0), for checking ``$select`` names early.

A name outside this list is a 400 from Graph ("Could not find a property named
... on type 'microsoft.graph.user'"); checking first turns a bad USER_SELECT
into a configuration error that names the setting, and a caller's typo into a
400 that names the property, without a request.
https://learn.microsoft.com/graph/api/resources/user#properties
"""

from __future__ import annotations

import re
from collections.abc import Iterable

USER_PROPERTIES = frozenset(
    {
        "aboutMe",
        "accountEnabled",
        "ageGroup",
        "assignedLicenses",
        "assignedPlans",
        "authorizationInfo",
        "birthday",
        "businessPhones",
        "city",
        "companyName",
        "consentProvidedForMinor",
        "country",
        "createdDateTime",
        "creationType",
        "customSecurityAttributes",
        "deletedDateTime",
        "department",
        "displayName",
        "employeeHireDate",
        "employeeId",
        "employeeLeaveDateTime",
        "employeeOrgData",
        "employeeType",
        "externalUserState",
        "externalUserStateChangeDateTime",
        "faxNumber",
        "givenName",
        "hireDate",
        "id",
        "identities",
        "imAddresses",
        "interests",
        "isManagementRestricted",
        "isResourceAccount",
        "jobTitle",
        "lastPasswordChangeDateTime",
        "legalAgeGroupClassification",
        "licenseAssignmentStates",
        "mail",
        "mailboxSettings",
        "mailNickname",
        "mobilePhone",
        "mySite",
        "officeLocation",
        "onPremisesDistinguishedName",
        "onPremisesDomainName",
        "onPremisesExtensionAttributes",
        "onPremisesImmutableId",
        "onPremisesLastSyncDateTime",
        "onPremisesProvisioningErrors",
        "onPremisesSamAccountName",
        "onPremisesSecurityIdentifier",
        "onPremisesSyncEnabled",
        "onPremisesUserPrincipalName",
        "otherMails",
        "passwordPolicies",
        "passwordProfile",
        "pastProjects",
        "postalCode",
        "preferredDataLocation",
        "preferredLanguage",
        "preferredName",
        "print",
        "provisionedPlans",
        "proxyAddresses",
        "responsibilities",
        "schools",
        "securityIdentifier",
        "serviceProvisioningErrors",
        "showInAddressList",
        "signInActivity",
        "signInSessionsValidFromDateTime",
        "skills",
        "state",
        "streetAddress",
        "surname",
        "usageLocation",
        "userPrincipalName",
        "userType",
    }
)
# Directory extension attributes (extension_{appId without dashes}_{name}) and
# schema extensions (ext{8 chars}_{name}) are selectable by name as well.
# https://learn.microsoft.com/graph/extensibility-overview
_EXTENSION = re.compile(r"^(?:extension_[0-9a-fA-F]{32}_\w{1,100}|ext[a-z0-9]{8}_\w{1,100})$")


# Advanced queries (ConsistencyLevel: eventual and $count=true): what makes a $filter one.
# https://learn.microsoft.com/graph/aad-advanced-queries#support-for-filter-by-properties-of-microsoft-entra-id-directory-objects
# Operators that need it on every property: not and ne, endsWith, null values, /$count.
ADVANCED_OPERATORS = frozenset({"ne", "not", "endswith", "null", "$count"})
# Properties indexed only in the advanced store: every operator on them needs it.
ADVANCED_PROPERTIES = frozenset(
    {
        "companyName",
        "employeeHireDate",
        "employeeType",
        "mobilePhone",
        "officeLocation",
        "onPremisesExtensionAttributes",
        "onPremisesImmutableId",
        "onPremisesLastSyncDateTime",
        "onPremisesSamAccountName",
        "passwordPolicies",
        "postalCode",
        "preferredLanguage",
        "showInAddressList",
        "streetAddress",
    }
)
# Other properties on which one operator needs it (the table's "Advanced" cells).
ADVANCED_PAIRS = frozenset(
    {
        ("accountEnabled", "ge"),
        ("accountEnabled", "le"),
        ("createdDateTime", "in"),
        ("deletedDateTime", "in"),
        ("employeeId", "le"),
        ("onPremisesSyncEnabled", "ge"),
        ("onPremisesSyncEnabled", "le"),
    }
)


def unknown_user_properties(names: Iterable[str]) -> list[str]:
    """The names that are neither a user property nor an extension attribute, in order."""
    return [n for n in names if n not in USER_PROPERTIES and not _EXTENSION.match(n)]
