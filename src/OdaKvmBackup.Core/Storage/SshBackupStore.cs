using System.Globalization;
using System.Security.Cryptography;
using OdaKvmBackup.Core.Remote;

namespace OdaKvmBackup.Core.Storage;

/// <summary>
/// A backup store in a folder on an SSH server, over SFTP: the server needs sshd with its sftp subsystem, plus a POSIX
/// sh with dd, sha256sum, nproc and xargs for <see cref="SegmentDigestsAsync"/> and <c>sync</c> to flush a renamed folder.
/// Small operations share one SFTP session; each file being written or read has its own, so a large copy does not
/// wait behind others. A connection lost after it worked is made again (see <see cref="SshReconnectPolicy"/>) and the
/// operation runs again; the operations are written so that running one twice is harmless.
/// </summary>
public sealed class SshBackupStore : IBackupStore
{
    private const UnixFileMode FolderMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    private const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    // ssh sends the remote command as one string, which Linux limits to 128 KiB: digests are asked in batches.
    private const int SegmentsPerCommand = 2000;

    private readonly SshClient _ssh;
    private readonly SshReconnectPolicy _reconnect;
    private readonly SftpConnection _control;
    private readonly string _root;

    public SshBackupStore(SshClient ssh, SshReconnectPolicy? reconnect = null)
    {
        _ssh = ssh;
        _reconnect = reconnect ?? SshReconnectPolicy.Default;
        _control = new SftpConnection(ssh, _reconnect);
        // SFTP paths that do not start with '/' are relative to the home folder, which is what "~/" means to scp.
        var path = ssh.Destination.Path;
        _root = path == "~" ? "" : path.StartsWith("~/", StringComparison.Ordinal) ? path[2..] : path;
    }

    public string Location => _ssh.Destination.ToString();

    public bool IsRemote => true;

    public string Describe(string relativePath) => _ssh.Destination.WithPath(RemotePath(relativePath)).ToString();

    public Task CheckWritableAsync(CancellationToken ct) => RunAsync(async (session, _) =>
    {
        var root = RemotePath("");
        var attributes = await session.StatAsync(root, ct).ConfigureAwait(false);
        if (attributes is null || !attributes.IsDirectory)
        {
            throw new BackupException(ErrorIds.PathNotFound, BackupErrorCategory.ObjectNotFound,
                $"The destination folder '{Location}' {(attributes is null ? "does not exist" : "is not a folder")}.",
                "Create the folder on the server (mkdir -m 700), or correct the destination; a relative path starts at the SSH user's home folder.", Location);
        }
        // A new random name with create-new: never follows or overwrites what is there.
        var probe = Join(root, $".odakvm-write-check-{RandomNumberGenerator.GetHexString(16, lowercase: true)}");
        try
        {
            var handle = await session.OpenAsync(probe, SftpOpenFlags.Write | SftpOpenFlags.Create | SftpOpenFlags.Exclusive, FileMode, ct).ConfigureAwait(false);
            await session.CloseAsync(handle, ct).ConfigureAwait(false);
        }
        catch (SftpStatusException ex)
        {
            throw new BackupException(ErrorIds.PathNotWritable, BackupErrorCategory.PermissionDenied,
                $"The destination folder '{Location}' cannot be written: {ex.Message}",
                "Give the SSH user write access to the folder on the server (and check that its file system is not read-only), or choose another destination.", Location, ex);
        }
        await session.RemoveAsync(probe, ct).ConfigureAwait(false);
        return true;
    }, ct);

    public Task<long> GetFreeBytesAsync(CancellationToken ct) =>
        RunAsync(async (session, _) => (await session.StatVfsAsync(RemotePath(""), ct).ConfigureAwait(false)).AvailableBytes, ct);

    public Task<StoreEntry?> GetEntryAsync(string relativePath, CancellationToken ct) => RunAsync(async (session, _) =>
    {
        var attributes = await session.StatAsync(RemotePath(relativePath), ct).ConfigureAwait(false);
        return attributes is null ? null : ToEntry(Name(relativePath), attributes);
    }, ct);

    public Task<IReadOnlyList<StoreEntry>> ListAsync(string relativeFolder, CancellationToken ct) => RunAsync(async (session, _) =>
    {
        try
        {
            var entries = await session.ListDirectoryAsync(RemotePath(relativeFolder), ct).ConfigureAwait(false);
            return (IReadOnlyList<StoreEntry>)entries.Select(entry => ToEntry(entry.Name, entry.Attributes)).ToList();
        }
        catch (SftpStatusException ex) when (ex.Status == SftpStatusCode.NoSuchFile)
        {
            return [];
        }
    }, ct);

    public Task CreateFolderAsync(string relativePath, CancellationToken ct) => RunAsync(async (session, _) =>
    {
        var folder = RemotePath("");
        foreach (var part in Parts(relativePath))
        {
            folder = Join(folder, part);
            await CreateOneFolderAsync(session, folder, ct).ConfigureAwait(false);
        }
        return true;
    }, ct);

    public async Task WriteSmallFileAsync(string relativePath, byte[] content, CancellationToken ct)
    {
        var target = RemotePath(relativePath);
        string? temporary = null;
        await RunAsync(async (session, retried) =>
        {
            if (retried && temporary is not null)
                await RemoveIfThereAsync(session, temporary, ct).ConfigureAwait(false);
            temporary = Join(Parent(target), $".{Name(relativePath)}.tmp-{RandomNumberGenerator.GetHexString(8, lowercase: true)}");
            var handle = await session.OpenAsync(temporary, SftpOpenFlags.Write | SftpOpenFlags.Create | SftpOpenFlags.Exclusive, FileMode, ct).ConfigureAwait(false);
            try
            {
                await session.SetStatAsync(handle, SftpAttributes.WithMode(FileMode), ct).ConfigureAwait(false);
                var writes = new List<Task>();
                for (var offset = 0; offset < content.Length; offset += session.MaxWriteLength)
                    writes.Add(session.WriteAsync(handle, offset, content.AsMemory(offset, Math.Min(session.MaxWriteLength, content.Length - offset)), ct));
                await Task.WhenAll(writes).ConfigureAwait(false);
                await session.FsyncAsync(handle, ct).ConfigureAwait(false);
            }
            finally
            {
                if (session.Failure is null)
                    await session.CloseAsync(handle, ct).ConfigureAwait(false);
            }
            await session.PosixRenameAsync(temporary, target, ct).ConfigureAwait(false);
            await SyncRenamedFileAsync(session, target, ct).ConfigureAwait(false);
            return true;
        }, ct).ConfigureAwait(false);
    }

    public Task<byte[]> ReadSmallFileAsync(string relativePath, CancellationToken ct) => RunAsync(async (session, _) =>
    {
        var path = RemotePath(relativePath);
        var handle = await session.OpenAsync(path, SftpOpenFlags.Read, null, ct).ConfigureAwait(false);
        try
        {
            using var content = new MemoryStream();
            var buffer = new byte[session.MaxReadLength];
            int read;
            while ((read = await session.ReadAsync(handle, content.Length, buffer, ct).ConfigureAwait(false)) > 0)
                content.Write(buffer, 0, read);
            return content.ToArray();
        }
        finally
        {
            if (session.Failure is null)
                await session.CloseAsync(handle, ct).ConfigureAwait(false);
        }
    }, ct);

    public async Task<IStoreFileWriter> CreateFileAsync(string relativePath, CancellationToken ct) =>
        await SshStoreFileWriter.CreateAsync(new SftpConnection(_ssh, _reconnect), RemotePath(relativePath), ct).ConfigureAwait(false);

    public async Task<IStoreFileReader> OpenReadAsync(string relativePath, CancellationToken ct) =>
        await SshStoreFileReader.OpenAsync(new SftpConnection(_ssh, _reconnect), RemotePath(relativePath), ct).ConfigureAwait(false);

    public async Task RenameAsync(string from, string to, CancellationToken ct)
    {
        var source = RemotePath(from);
        var target = RemotePath(to);
        var renamedFolder = await RunAsync(async (session, retried) =>
        {
            try
            {
                await session.PosixRenameAsync(source, target, ct).ConfigureAwait(false);
            }
            catch (SftpStatusException ex) when (retried && ex.Status == SftpStatusCode.NoSuchFile)
            {
                // The first attempt may have renamed before its connection broke.
                if (await session.LStatAsync(target, ct).ConfigureAwait(false) is null)
                    throw;
            }
            var renamed = await session.LStatAsync(target, ct).ConfigureAwait(false);
            if (renamed is { IsRegularFile: true })
                await SyncRenamedFileAsync(session, target, ct).ConfigureAwait(false);
            return renamed is { IsDirectory: true };
        }, ct).ConfigureAwait(false);
        if (renamedFolder)
            await SyncFolderAsync(Parent(target), ct).ConfigureAwait(false);
    }

    public Task DeleteAsync(string relativePath, bool recursive, CancellationToken ct) =>
        RunAsync(async (session, _) =>
        {
            await DeleteTreeAsync(session, RemotePath(relativePath), recursive, ct).ConfigureAwait(false);
            return true;
        }, ct);

    public async Task<IReadOnlyList<string>> SegmentDigestsAsync(string relativePath, long segmentSize, IReadOnlyList<long> segmentIndexes,
        CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(segmentSize);
        var path = ScriptPath(RemotePath(relativePath));
        var blockSize = DdBlockSize(segmentSize);
        var digests = new List<string>(segmentIndexes.Count);
        foreach (var batch in segmentIndexes.Chunk(SegmentsPerCommand))
        {
            string[] arguments = [path, blockSize.ToString(CultureInfo.InvariantCulture), (segmentSize / blockSize).ToString(CultureInfo.InvariantCulture),
                .. batch.Select(index => index.ToString(CultureInfo.InvariantCulture))];
            // Reading back a whole disk on the server takes as long as its data: the long-work time limit.
            var result = await RunScriptAsync(SegmentDigestScript, arguments, ct, Processes.ToolTimeouts.LongWork).ConfigureAwait(false);
            if (result.ExitCode == SegmentScriptFileMissing)
            {
                throw new BackupException(ErrorIds.PathNotFound, BackupErrorCategory.ObjectNotFound,
                    $"Cannot read '{Describe(relativePath)}' on the server to verify it: {result.StandardError.Trim()}.",
                    "Check that the file is there and readable by the SSH user.", Describe(relativePath));
            }
            if (result.ExitCode != 0)
                throw CommandFailed("compute the digests of", relativePath, result);
            digests.AddRange(ParseSegmentDigests(result.StandardOutput, batch, Describe(relativePath)));
        }
        return digests;
    }

    public async ValueTask DisposeAsync() => await _control.DisposeAsync().ConfigureAwait(false);

    // ------------------------------------------------------------------ remote scripts

    internal const int SegmentScriptFileMissing = 2;

    /// <summary>
    /// Prints "&lt;index&gt; &lt;sha256&gt;" for each asked segment of a file, as many segments at once as the server
    /// has cores. Arguments: the file, dd's block size, blocks per segment, then the segment indexes. A segment dd
    /// cannot read stops the run (exit 255 of a job makes xargs stop). The file's cached pages are dropped first
    /// (GNU dd; elsewhere a no-op), so what is read is what the storage holds.
    /// </summary>
    internal const string SegmentDigestScript = """
        file=$1 bs=$2 count=$3
        shift 3
        if [ ! -f "$file" ] || [ ! -r "$file" ]; then echo "no readable file $file" >&2; exit 2; fi
        dd if="$file" iflag=nocache count=0 2>/dev/null
        printf '%s\n' "$@" | xargs -n 1 -P "$(nproc 2>/dev/null || echo 2)" sh -c '
          r=$( { { dd if="$1" bs="$2" skip=$(($3 * $4)) count="$3" 2>/dev/null; echo "dd=$?" >&3; } | sha256sum; } 3>&1 )
          case $r in *dd=0*) ;; *) echo "cannot read segment $4 of $1" >&2; exit 255 ;; esac
          for word in $r; do [ ${#word} -eq 64 ] && sum=$word; done
          printf "%s %s\n" "$4" "$sum"
        ' sh "$file" "$bs" "$count"
        """;

    /// <summary>Flushes a folder (its entries: a renamed folder) to disk. SFTP cannot fsync a folder, so sync(1)
    /// does it on the server; a sync too old to take a name flushes everything.</summary>
    internal const string SyncFolderScript = """sync "$1" 2>/dev/null || sync""";

    /// <summary>The digests in the order asked, from the script's "index digest" lines (which come in any order).</summary>
    internal static IReadOnlyList<string> ParseSegmentDigests(string output, IReadOnlyList<long> indexes, string where)
    {
        var byIndex = new Dictionary<long, string>();
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var fields = line.Split(' ');
            if (fields.Length == 2 && long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var index)
                && fields[1].Length == 64 && fields[1].All(char.IsAsciiHexDigitLower))
                byIndex[index] = fields[1];
        }
        var missing = indexes.Where(index => !byIndex.ContainsKey(index)).ToList();
        if (missing.Count > 0)
        {
            throw new BackupException(ErrorIds.UnparsableOutput, BackupErrorCategory.ParserError,
                $"The server returned no digest for segment(s) {string.Join(", ", missing.Take(10))} of '{where}' (output: '{output.Trim()}').",
                "Check that dd, sha256sum, nproc and xargs work on the server.", where);
        }
        return indexes.Select(index => byIndex[index]).ToList();
    }

    /// <summary>The largest power of two up to 1 MiB that divides the segment size, so dd reads whole segments.</summary>
    internal static long DdBlockSize(long segmentSize)
    {
        var blockSize = 1L << 20;
        while (segmentSize % blockSize != 0)
            blockSize >>= 1;
        return blockSize;
    }

    /// <summary>
    /// Makes a file's rename durable without a shell: SFTP cannot fsync the folder, but a rename also changes the
    /// renamed file's inode (its ctime), so fsync of the file commits the journal transaction that holds the rename
    /// on ext4 and xfs, and btrfs logs the new name with the file.
    /// </summary>
    private static async Task SyncRenamedFileAsync(SftpClient session, string path, CancellationToken ct)
    {
        var handle = await session.OpenAsync(path, SftpOpenFlags.Read, null, ct).ConfigureAwait(false);
        try
        {
            await session.FsyncAsync(handle, ct).ConfigureAwait(false);
        }
        finally
        {
            if (session.Failure is null)
                await session.CloseAsync(handle, ct).ConfigureAwait(false);
        }
    }

    private async Task SyncFolderAsync(string folder, CancellationToken ct)
    {
        var result = await RunScriptAsync(SyncFolderScript, [ScriptPath(folder)], ct).ConfigureAwait(false);
        if (result.ExitCode != 0)
            throw CommandFailed("flush", folder, result);
    }

    /// <summary>Runs a script on the server; a lost connection is retried like the SFTP operations (the scripts only read or flush).</summary>
    private async Task<Processes.ProcessResult> RunScriptAsync(string script, IReadOnlyList<string> arguments, CancellationToken ct, TimeSpan? timeout = null)
    {
        var attempts = 0;
        while (true)
        {
            try
            {
                return await _ssh.RunScriptAsync(script, arguments, ct, timeout).ConfigureAwait(false);
            }
            catch (BackupException ex) when (ex.ErrorId == ErrorIds.SshConnectionLost && attempts < _reconnect.Delays.Count)
            {
                await Task.Delay(_reconnect.Delays[attempts++], ct).ConfigureAwait(false);
            }
        }
    }

    private BackupException CommandFailed(string what, string path, Processes.ProcessResult result) =>
        new(ErrorIds.SshCommandFailed, BackupErrorCategory.InvalidResult,
            $"Cannot {what} '{_ssh.Destination.WithPath(path)}' on the server (exit code {result.ExitCode}): {result.StandardError.Trim()}.",
            "The server needs a POSIX sh with dd, sha256sum, nproc, xargs and sync for the SSH user (an SFTP-only account is not enough).", Location);

    // ------------------------------------------------------------------ helpers

    /// <summary>Runs an operation on the shared session; when its connection is lost, connects again (see the
    /// policy) and runs it again, telling it so (<c>retried</c>).</summary>
    private async Task<T> RunAsync<T>(Func<SftpClient, bool, Task<T>> operation, CancellationToken ct)
    {
        var attempts = new ReconnectAttempts();
        var session = await _control.GetAsync(ct).ConfigureAwait(false);
        while (true)
        {
            try
            {
                return await operation(session, attempts.Used > 0).ConfigureAwait(false);
            }
            catch (BackupException ex) when (SftpConnection.IsConnectionProblem(ex) && session.Failure is not null)
            {
                session = await _control.ReconnectAsync(session, ex, attempts, ct).ConfigureAwait(false);
            }
        }
    }

    private async Task CreateOneFolderAsync(SftpClient session, string folder, CancellationToken ct)
    {
        var existing = await session.StatAsync(folder, ct).ConfigureAwait(false);
        if (existing is null)
        {
            try
            {
                await session.MakeDirectoryAsync(folder, FolderMode, ct).ConfigureAwait(false);
                // Explicitly: the server's umask may have taken bits away, and the contract is 0700 exactly.
                await session.SetStatAsync(folder, SftpAttributes.WithMode(FolderMode), ct).ConfigureAwait(false);
                return;
            }
            catch (SftpStatusException ex) when (ex.Status == SftpStatusCode.Failure)
            {
                // Made meanwhile by someone else (version 3 has no "already exists" status)?
                existing = await session.StatAsync(folder, ct).ConfigureAwait(false);
                if (existing is null)
                    throw;
            }
        }
        if (!existing.IsDirectory)
        {
            throw new BackupException(ErrorIds.PathNotWritable, BackupErrorCategory.ResourceExists,
                $"Cannot create the folder '{_ssh.Destination.WithPath(folder)}': a file of that name is there.",
                "Move or delete that file on the server, or choose another destination.", _ssh.Destination.WithPath(folder).ToString());
        }
    }

    private static async Task DeleteTreeAsync(SftpClient session, string path, bool recursive, CancellationToken ct)
    {
        var attributes = await session.LStatAsync(path, ct).ConfigureAwait(false);
        if (attributes is null)
            return;
        if (!attributes.IsDirectory)
        {
            await RemoveIfThereAsync(session, path, ct).ConfigureAwait(false);
            return;
        }
        if (recursive)
        {
            // The names come from the server: each is proven to lie in the folder being deleted.
            foreach (var entry in await session.ListDirectoryAsync(path, ct).ConfigureAwait(false))
                await DeleteTreeAsync(session, Backup.FileSystemPaths.JoinInside(path, entry.Name, "The server's listing"), recursive: true, ct).ConfigureAwait(false);
        }
        await session.RemoveDirectoryAsync(path, ct).ConfigureAwait(false);
    }

    private static async Task RemoveIfThereAsync(SftpClient session, string path, CancellationToken ct)
    {
        try
        {
            await session.RemoveAsync(path, ct).ConfigureAwait(false);
        }
        catch (SftpStatusException ex) when (ex.Status == SftpStatusCode.NoSuchFile)
        {
        }
    }

    private static StoreEntry ToEntry(string name, SftpAttributes attributes) =>
        new(name, attributes.IsDirectory, attributes.Size ?? 0, attributes.ModifiedTimeUtc ?? DateTime.UnixEpoch, attributes.Mode);

    /// <summary>The path on the server: the root joined with a store path ("vm/run/disk"), proven to stay under it.</summary>
    private string RemotePath(string relativePath)
    {
        var path = _root;
        foreach (var part in Parts(relativePath))
            path = Join(path, part);
        return path.Length == 0 ? "." : path;
    }

    private IEnumerable<string> Parts(string relativePath)
    {
        if (relativePath.Length > 0)
            Backup.FileSystemPaths.JoinInside(_root.Length == 0 ? "." : _root, relativePath, $"A path in the store '{Location}'");
        return relativePath.Split('/', StringSplitOptions.RemoveEmptyEntries);
    }

    private static string Join(string folder, string name) =>
        folder.Length == 0 || folder == "." ? name : folder.EndsWith('/') ? folder + name : folder + "/" + name;

    private static string Parent(string path)
    {
        var slash = path.TrimEnd('/').LastIndexOf('/');
        return slash < 0 ? "." : slash == 0 ? "/" : path[..slash];
    }

    private static string Name(string path) => path.TrimEnd('/')[(path.TrimEnd('/').LastIndexOf('/') + 1)..];

    /// <summary>A relative path as a script argument: "./" in front, so a name starting with '-' is never an option.</summary>
    private static string ScriptPath(string path) => path.StartsWith('/') ? path : "./" + path;
}
