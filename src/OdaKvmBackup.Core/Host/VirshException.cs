namespace OdaKvmBackup.Core.Host;

/// <summary>A virsh command that exited non-zero.</summary>
public sealed class VirshException : BackupException
{
    public VirshException(string commandLine, int exitCode, string stderr, VirshFailure failure, string message,
        string errorId, BackupErrorCategory category, string? recommendedAction, string? target)
        : base(errorId, category, message, recommendedAction, target)
    {
        CommandLine = commandLine;
        ExitCode = exitCode;
        StandardError = stderr;
        Failure = failure;
    }

    public string CommandLine { get; }
    public int ExitCode { get; }
    public string StandardError { get; }
    public VirshFailure Failure { get; }
}
