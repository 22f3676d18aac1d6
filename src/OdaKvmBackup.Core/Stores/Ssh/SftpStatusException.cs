using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;

namespace OdaKvmBackup.Core.Stores.Ssh;

/// <summary>An SFTP request the server refused, with its status code.</summary>
public sealed class SftpStatusException : BackupException
{
    public SftpStatusException(SftpStatusCode status, string errorId, BackupErrorCategory category, string message, string recommendedAction, string target)
        : base(errorId, category, message, recommendedAction, target) => Status = status;

    public SftpStatusCode Status { get; }
}
