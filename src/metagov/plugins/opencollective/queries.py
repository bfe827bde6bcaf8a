"""The GraphQL documents the plugin sends to Open Collective's API v2."""

from __future__ import annotations

ACCOUNT_FIELDS = "id legacyId slug name type"

EXPENSE_FIELDS = """
fragment ExpenseFields on Expense {
  id
  legacyId
  description
  amount
  currency
  type
  status
  createdAt
  tags
  account {
    id
    legacyId
    slug
    name
    type
    ... on AccountWithParent { parent { id legacyId slug } }
  }
  payee { id slug name }
  createdByAccount { id slug name }
  activities { id type createdAt individual { id slug } }
}
"""

CONVERSATION_FIELDS = """
fragment ConversationFields on Conversation {
  id
  slug
  title
  createdAt
  tags
  account { id slug }
  body { id reactions }
  stats { commentsCount }
}
"""

LOGGED_IN_ACCOUNT = """
query LoggedInAccount {
  loggedInAccount {
    id
    slug
    name
    memberOf(role: ADMIN, accountType: [COLLECTIVE, FUND, ORGANIZATION], limit: 10) {
      totalCount
      nodes { account { id slug name type } }
    }
  }
}
"""

ACCOUNT = f"""
query Account($slug: String!) {{
  account(slug: $slug) {{
    {ACCOUNT_FIELDS}
    childrenAccounts(limit: 100) {{ nodes {{ {ACCOUNT_FIELDS} }} }}
  }}
}}
"""

MEMBERS = """
query Members($slug: String!, $limit: Int!, $offset: Int!) {
  account(slug: $slug) {
    members(limit: $limit, offset: $offset) {
      totalCount
      nodes { id role since account { id slug name type } }
    }
  }
}
"""

EXPENSE = (
    """
query Expense($expense: ExpenseReferenceInput!) {
  expense(expense: $expense) { ...ExpenseFields }
}
"""
    + EXPENSE_FIELDS
)

PROCESS_EXPENSE = (
    """
mutation ProcessExpense(
  $expense: ExpenseReferenceInput!, $action: ExpenseProcessAction!, $message: String
) {
  processExpense(expense: $expense, action: $action, message: $message) { ...ExpenseFields }
}
"""
    + EXPENSE_FIELDS
)

CONVERSATION = (
    """
query Conversation($id: String!) {
  conversation(id: $id) { ...ConversationFields }
}
"""
    + CONVERSATION_FIELDS
)

CREATE_CONVERSATION = (
    """
mutation CreateConversation(
  $title: String!, $html: String!, $account: AccountReferenceInput!, $tags: [String]
) {
  createConversation(title: $title, html: $html, account: $account, tags: $tags) {
    ...ConversationFields
  }
}
"""
    + CONVERSATION_FIELDS
)

EDIT_CONVERSATION = (
    """
mutation EditConversation($id: String!, $title: String!) {
  editConversation(id: $id, title: $title) { ...ConversationFields }
}
"""
    + CONVERSATION_FIELDS
)

CREATE_COMMENT = """
mutation CreateComment($comment: CommentCreateInput!) {
  createComment(comment: $comment) { id createdAt html }
}
"""

CREATE_WEBHOOK = """
mutation CreateWebhook($webhook: WebhookCreateInput!) {
  createWebhook(webhook: $webhook) { id legacyId activityType }
}
"""

UPDATE_WEBHOOK = """
mutation UpdateWebhook($webhook: WebhookUpdateInput!) {
  updateWebhook(webhook: $webhook) { id legacyId activityType }
}
"""
