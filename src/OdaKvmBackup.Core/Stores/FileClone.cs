using System.Runtime.InteropServices;
using Microsoft.Win32.SafeHandles;

namespace OdaKvmBackup.Core.Stores;

/// <summary>How a clone was stored (<see cref="FileClone.Reflink"/> or <see cref="FileClone.LocalCopy"/>), the file's
/// size, and the bytes of the base's data extents a local copy went through (its holes skipped; none for a reflink).</summary>
internal sealed record CloneResult(string StoredAs, long SizeBytes, long CopiedBytes);

/// <summary>
/// A new file with the content of another on the same file system, made by the file system itself: the next set's
/// copy starting as the previous set's. FICLONE shares the blocks (XFS with reflink, btrfs; NFS 4.2 passes it to a
/// server that can): no data moves, no space is used, and writing to either file later never changes the other.
/// Where the file system refuses, a sparse copy on the same file system stands in (copy_file_range over the data
/// extents, so holes stay holes and NFS 4.2 copies on the server). The base is opened read-only and never written;
/// the new file is created 0600 and must not exist; links are never followed. The new file is not fsynced: whoever
/// writes into it next fsyncs it once.
/// </summary>
internal static partial class FileClone
{
    /// <summary>The blocks are shared with the base (FICLONE, <c>cp --reflink=always</c>).</summary>
    public const string Reflink = "reflink";

    /// <summary>A copy made on the destination itself (the file system cannot clone): no bytes crossed the network.</summary>
    public const string LocalCopy = "local copy";

    private const nuint Ficlone = 0x40049409; // _IOW(0x94, 9, int)
    private const int ORdOnly = 0, OWrOnly = 1, OCreat = 0x40, OExcl = 0x80, ONonBlock = 0x800, ONoFollow = 0x20000, OCloExec = 0x80000;
    private const int SeekEnd = 2, SeekData = 3, SeekHole = 4;
    private const int EIntr = 4, ENoEnt = 2, EAcces = 13, EExist = 17, EXDev = 18, EIsDir = 21, EInval = 22, ENotTy = 25,
        ENoSpc = 28, ESPipe = 29, ENoSys = 38, ELoop = 40, ENxio = 6, EOpNotSupp = 95, EDQuot = 122;
    private const long BytesBetweenCancellationChecks = 256L << 20; // between two looks at the cancellation token

    /// <summary><see cref="Clone(string, string, CancellationToken)"/> on a thread of its own: a local copy of a large file takes as long as its data.</summary>
    public static Task<CloneResult> CloneAsync(string basePath, string newPath, CancellationToken ct) =>
        Task.Factory.StartNew(() => Clone(basePath, newPath, ct), CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);

    /// <summary>
    /// Makes <paramref name="newPath"/> a clone of <paramref name="basePath"/>, or a sparse copy where the file system
    /// cannot clone. Failures are <see cref="BackupException"/>s, and leave no new file behind.
    /// </summary>
    public static CloneResult Clone(string basePath, string newPath, CancellationToken ct) => Clone(basePath, newPath, kernelCopy: true, ct);

    /// <summary>As <see cref="Clone(string, string, CancellationToken)"/>; without <paramref name="kernelCopy"/>, a
    /// local copy reads and writes as where copy_file_range is missing (Oracle Linux 7's glibc).</summary>
    internal static CloneResult Clone(string basePath, string newPath, bool kernelCopy, CancellationToken ct)
    {
        ct.ThrowIfCancellationRequested();
        using var source = OpenBase(basePath);
        using var target = CreateNew(newPath);
        var done = false;
        try
        {
            var size = Seek(source, 0, SeekEnd, basePath);
            CloneResult result;
            if (Ioctl(Fd(target), Ficlone, Fd(source)) == 0)
            {
                result = new CloneResult(Reflink, size, 0);
            }
            else
            {
                var errno = Marshal.GetLastPInvokeError();
                // The file system (or the pair of them) cannot clone: ext4, tmpfs, XFS without reflink, NFS before 4.2.
                if (errno is not (EOpNotSupp or EXDev or EInval or ENotTy))
                    throw Failed($"Cloning '{basePath}' into '{newPath}' failed", errno, newPath);
                result = new CloneResult(LocalCopy, size, CopyData(source, target, size, kernelCopy, basePath, newPath, ct));
            }
            File.SetUnixFileMode(target, UnixFileMode.UserRead | UnixFileMode.UserWrite);
            done = true;
            return result;
        }
        finally
        {
            if (!done)
            {
                target.Dispose();
                File.Delete(newPath); // ours: it did not exist before (O_EXCL)
            }
        }
    }

    private static SafeFileHandle OpenBase(string path)
    {
        // O_NONBLOCK: a FIFO planted where a copy was expected must not hang the open (regular files ignore it).
        var fd = Open(path, ORdOnly | ONoFollow | ONonBlock | OCloExec, 0);
        if (fd >= 0)
            return new SafeFileHandle(fd, ownsHandle: true);
        var errno = Marshal.GetLastPInvokeError();
        throw errno switch
        {
            ENoEnt => new BackupException(ErrorIds.BackupCopyMissing, BackupErrorCategory.ObjectNotFound,
                $"The copy '{path}' to clone is not there.", "The earlier set is damaged: back up in full (-Full), and check it with Test-KvmBackup.", path),
            ELoop => new BackupException(ErrorIds.BackupSetUnreadable, BackupErrorCategory.InvalidData,
                $"'{path}' is a symbolic link, not a copy: it is not cloned.", "Remove the link, or the set that holds it, and back up in full (-Full).", path),
            EAcces => new BackupException(ErrorIds.PathNotReadable, BackupErrorCategory.PermissionDenied,
                $"The copy '{path}' to clone cannot be read.", "Run as root, or fix the permissions of the destination.", path),
            _ => Failed($"Opening the copy '{path}' to clone failed", errno, path),
        };
    }

    private static SafeFileHandle CreateNew(string path)
    {
        // O_EXCL with O_CREAT fails on anything at the path, a link (even a dangling one) included: never followed.
        var fd = Open(path, OWrOnly | OCreat | OExcl | ONoFollow | OCloExec, 0x180);
        if (fd >= 0)
            return new SafeFileHandle(fd, ownsHandle: true);
        var errno = Marshal.GetLastPInvokeError();
        throw errno == EExist
            ? new BackupException(ErrorIds.StorageFailed, BackupErrorCategory.ResourceExists,
                $"'{path}' already exists: the clone is not made over it.", "Remove what is there (a leftover of an interrupted run), then back up again.", path)
            : Failed($"Creating '{path}' failed", errno, path);
    }

    /// <summary>Copies the data extents of the base (holes are skipped, so they stay holes) and sets the size;
    /// returns the bytes copied. copy_file_range lets the kernel (or the NFS server) move the bytes; where it cannot
    /// (an old glibc or kernel, another file system) each extent is read and written, all-zero blocks left as holes.</summary>
    private static long CopyData(SafeFileHandle source, SafeFileHandle target, long size, bool kernelCopy, string basePath, string newPath, CancellationToken ct)
    {
        long copied = 0, offset = 0;
        byte[]? buffer = null;
        while (offset < size)
        {
            ct.ThrowIfCancellationRequested();
            var data = LSeek(Fd(source), offset, SeekData);
            if (data < 0)
            {
                var errno = Marshal.GetLastPInvokeError();
                if (errno == ENxio)
                    break; // only a hole is left
                throw Failed($"Reading the extents of '{basePath}' failed", errno, basePath);
            }
            var end = Seek(source, data, SeekHole, basePath);
            for (var position = data; position < end;)
            {
                ct.ThrowIfCancellationRequested();
                var length = Math.Min(BytesBetweenCancellationChecks, end - position);
                long count;
                if (kernelCopy)
                {
                    if (!TryKernelCopy(source, target, position, length, out count, out var errno))
                    {
                        // copy_file_range cannot do this pair of files: read and write them from here on.
                        if (errno is EXDev or EInval or EOpNotSupp or ENoSys)
                        {
                            kernelCopy = false;
                            continue;
                        }
                        throw Failed($"Copying '{basePath}' to '{newPath}' failed", errno, newPath);
                    }
                }
                else
                {
                    buffer ??= GC.AllocateUninitializedArray<byte>(1 << 20);
                    count = CopyByReading(source, target, position, (int)Math.Min(buffer.Length, length), buffer, basePath, newPath);
                }
                if (count == 0)
                    break; // the base got shorter meanwhile
                position += count;
                copied += count;
            }
            offset = end;
        }
        if (FTruncate(Fd(target), size) != 0)
            throw Failed($"Setting the size of '{newPath}' failed", Marshal.GetLastPInvokeError(), newPath);
        return copied;
    }

    private static bool TryKernelCopy(SafeFileHandle source, SafeFileHandle target, long position, long length, out long count, out int errno)
    {
        var input = position;
        var output = position;
        while (true)
        {
            try
            {
                count = CopyFileRange(Fd(source), ref input, Fd(target), ref output, (nuint)length, 0);
            }
            catch (EntryPointNotFoundException)
            {
                (count, errno) = (-1, ENoSys); // glibc before 2.27 (Oracle Linux 7)
                return false;
            }
            errno = count < 0 ? Marshal.GetLastPInvokeError() : 0;
            if (errno != EIntr)
                return count >= 0;
        }
    }

    private static int CopyByReading(SafeFileHandle source, SafeFileHandle target, long position, int length, byte[] buffer, string basePath, string newPath)
    {
        int read;
        try
        {
            read = RandomAccess.Read(source, buffer.AsSpan(0, length), position);
        }
        catch (IOException ex)
        {
            throw StoreErrors.FromIOException(ex, basePath);
        }
        for (var block = 0; block < read; block += 4096)
        {
            var piece = buffer.AsSpan(block, Math.Min(4096, read - block));
            if (piece.IndexOfAnyExcept((byte)0) < 0)
                continue; // zeros: a hole in the copy
            try
            {
                RandomAccess.Write(target, piece, position + block);
            }
            catch (IOException ex)
            {
                throw StoreErrors.FromIOException(ex, newPath);
            }
        }
        return read;
    }

    private static long Seek(SafeFileHandle handle, long offset, int whence, string path)
    {
        var result = LSeek(Fd(handle), offset, whence);
        return result >= 0 ? result : throw Failed($"Reading '{path}' failed", Marshal.GetLastPInvokeError(), path);
    }

    private static int Fd(SafeFileHandle handle) => (int)handle.DangerousGetHandle();

    private static BackupException Failed(string what, int errno, string path)
    {
        var cause = Marshal.GetPInvokeErrorMessage(errno);
        return errno switch
        {
            ENoSpc or EDQuot => new BackupException(ErrorIds.DestinationFull, BackupErrorCategory.WriteError,
                $"{what}: {cause}.", "Free space at the destination or choose another one, then back up again.", path),
            EIsDir or EInval or ESPipe => new BackupException(ErrorIds.BackupSetUnreadable, BackupErrorCategory.InvalidData,
                $"{what}: {cause} (a copy must be a regular file).", "Remove what is there, or the set that holds it, and back up in full (-Full).", path),
            _ => new BackupException(ErrorIds.StorageFailed, BackupErrorCategory.WriteError,
                $"{what}: {cause}.", "Check the storage (dmesg, file system errors, NFS mount), then try again.", path),
        };
    }

    [LibraryImport("libc", EntryPoint = "open", StringMarshalling = StringMarshalling.Utf8, SetLastError = true)]
    private static partial int Open(string path, int flags, int mode);

    [LibraryImport("libc", EntryPoint = "ioctl", SetLastError = true)]
    private static partial int Ioctl(int fd, nuint request, int argument);

    [LibraryImport("libc", EntryPoint = "lseek", SetLastError = true)]
    private static partial long LSeek(int fd, long offset, int whence);

    [LibraryImport("libc", EntryPoint = "copy_file_range", SetLastError = true)]
    private static partial long CopyFileRange(int input, ref long inputOffset, int output, ref long outputOffset, nuint length, uint flags);

    [LibraryImport("libc", EntryPoint = "ftruncate", SetLastError = true)]
    private static partial int FTruncate(int fd, long length);
}
