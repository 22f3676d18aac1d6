namespace OdaKvmBackup.Core.Safety;

/// <summary>
/// One backup per domain at a time, across processes: an exclusive flock on a file per domain (.NET takes it
/// for FileShare.None). The kernel drops it when the process dies, so a killed run never blocks the next one;
/// its journal does, until Repair-KvmBackup has put the domain back on its own disks.
/// </summary>
public sealed class DomainLock : IDisposable
{
    private FileStream? _stream;

    private DomainLock(string domain, FileStream stream)
    {
        DomainName = domain;
        _stream = stream;
    }

    public string DomainName { get; }

    public static DomainLock? TryAcquire(string domain)
    {
        Directory.CreateDirectory(StateDirectory.LockDirectory);
        var path = Path.Combine(StateDirectory.LockDirectory, StateDirectory.FileNameFor(domain) + ".lock");
        try
        {
            return new DomainLock(domain, new FileStream(path, FileMode.OpenOrCreate, FileAccess.ReadWrite, FileShare.None));
        }
        catch (IOException)
        {
            return null;
        }
    }

    public void Dispose()
    {
        _stream?.Dispose();
        _stream = null;
    }
}
