using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;

namespace OdaKvmBackup.Core.Stores.Ssh;

/// <summary>A packet waiting for the sender thread: its header, for a WRITE the caller's data, and the request
/// that waits for its reply (null for INIT).</summary>
internal readonly record struct OutgoingPacket(ReadOnlyMemory<byte> Header, ReadOnlyMemory<byte> Data, IPendingReply? Reply = null);

/// <summary>A request waiting for its reply.</summary>
internal interface IPendingReply
{
    SftpPacketType Type { get; }

    /// <summary>How many request limits it may wait (fsync: <see cref="SftpLimits.FlushTimeoutFactor"/>).</summary>
    int TimeoutFactor { get; }

    /// <summary>Environment.TickCount64 when the sender had written it whole; 0 before.</summary>
    long SentAt { get; }

    void Sent(long ticks);

    /// <summary>Reads the reply (on the receiver thread) and completes the request with the result or the error.</summary>
    void Complete(SftpResponse reply);

    void Fail(Exception failure);
}

internal sealed class PendingReply<T>(SftpPacketType type, int timeoutFactor, Func<SftpResponse, T> read) : IPendingReply
{
    private readonly TaskCompletionSource<T> _result = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private long _sentAt;

    public Task<T> Task => _result.Task;

    public SftpPacketType Type => type;

    public int TimeoutFactor => timeoutFactor;

    public long SentAt => Volatile.Read(ref _sentAt);

    public void Sent(long ticks) => Volatile.Write(ref _sentAt, ticks);

    public void Complete(SftpResponse reply)
    {
        try
        {
            _result.TrySetResult(read(reply));
        }
        catch (Exception ex)
        {
            _result.TrySetException(ex);
        }
    }

    public void Fail(Exception failure) => _result.TrySetException(failure);
}
