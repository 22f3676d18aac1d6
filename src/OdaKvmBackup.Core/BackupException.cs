namespace OdaKvmBackup.Core;

/// <summary>Error categories the cmdlets map one to one onto PowerShell's ErrorCategory (same names).</summary>
public enum BackupErrorCategory
{
    NotSpecified, ObjectNotFound, InvalidArgument, InvalidOperation, ResourceExists, ResourceUnavailable,
    ResourceBusy, PermissionDenied, ConnectionError, OperationStopped, OperationTimeout, InvalidResult,
    ParserError, WriteError, NotInstalled, InvalidData, SecurityError,
}

/// <summary>A failure a user can act on: names the cause and, where one exists, the fix.</summary>
public class BackupException : Exception
{
    public BackupException(string errorId, BackupErrorCategory category, string message,
        string? recommendedAction = null, string? target = null, Exception? inner = null)
        : base(message, inner)
    {
        ErrorId = errorId;
        Category = category;
        RecommendedAction = recommendedAction;
        Target = target;
    }

    public string ErrorId { get; }
    public BackupErrorCategory Category { get; }
    public string? RecommendedAction { get; }
    /// <summary>The domain (or path) the error is about.</summary>
    public string? Target { get; }

    /// <summary>The same error with a sentence added to its message (what became of the VM, say), its fix kept
    /// unless another is given; this one is the inner exception.</summary>
    public BackupException WithSentence(string sentence, string? recommendedAction = null, string? target = null) =>
        new(ErrorId, Category, Message + " " + sentence, recommendedAction ?? RecommendedAction, target ?? Target, this);

    /// <summary>Message and fix in one text, for places that show a single string.</summary>
    public string FullMessage => RecommendedAction is null ? Message : Message + " " + RecommendedAction;
}
