"""The matrix itself: every rank runs each test, and ranks agree on the world."""

NP = (1, 3)


def test_all_ranks_take_part(comm):
    total = comm.allreduce(1)
    assert total == comm.Get_size()


def test_shared_tmp_path(comm, tmp_path):
    (tmp_path / f"r{comm.Get_rank()}").write_text("x")
    comm.Barrier()
    assert len(list(tmp_path.iterdir())) == comm.Get_size()
