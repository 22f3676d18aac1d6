namespace OdaKvmBackup.Core.Stores.Ssh;

/// <summary>The reconnection attempts one operation has used: each lost connection and each failed attempt to
/// connect again spends one.</summary>
internal sealed class ReconnectAttempts
{
    public int Used { get; set; }
}
