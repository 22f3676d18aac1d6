namespace OdaKvmBackup.Core.RunState;

/// <summary>
/// One backup per domain at a time, across processes and within one: an exclusive flock on a file per domain
/// (.NET takes it for FileShare.None, per open file, so a second open in the same process is refused too). The
/// kernel drops it when the process dies, so a killed run never blocks the next one; its journal does, until
/// Repair-KvmBackup has put the domain back on its own disks.
/// </summary>
internal sealed class DomainLock : IDisposable
{
    private FileStream? _stream;

    private DomainLock(string domain, FileStream stream)
    {
        DomainName = domain;
        _stream = stream;
    }

    public string DomainName { get; }

    /// <summary>The lock, or null while another holds it. A lock folder that cannot be made is
    /// <see cref="ErrorIds.JournalWriteFailed"/>: the journal lives in the same state folder.</summary>
    public static DomainLock? TryAcquire(string domain)
    {
        try
        {
            PrivateFiles.CreateFolder(StateDirectory.LockDirectory);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            throw RunErrors.JournalWriteFailed(domain, $"The lock folder '{StateDirectory.LockDirectory}' cannot be created", ex);
        }
        try
        {
            var stream = new FileStream(StateDirectory.LockPath(domain), new FileStreamOptions
            {
                Mode = FileMode.OpenOrCreate,
                Access = FileAccess.ReadWrite,
                Share = FileShare.None,
                UnixCreateMode = PrivateFiles.FileMode,
            });
            return new DomainLock(domain, stream);
        }
        catch (IOException)
        {
            return null; // held by another process (flock)
        }
        catch (UnauthorizedAccessException ex)
        {
            throw RunErrors.JournalWriteFailed(domain, $"The lock file '{StateDirectory.LockPath(domain)}' cannot be opened", ex);
        }
    }

    public void Dispose()
    {
        _stream?.Dispose();
        _stream = null;
    }
}
